//! Minting and verifying next to the peers that do the same job, and next to the raw Ed25519
//! operations underneath, in one run. `scripts/bench.sh` turns the medians into ratios.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pulsebeam_token::{
    AccessToken, FixedClock, KeySet, PeerClaims, PeerPolicy, SigningKey, Verifier,
};
use serde::{Deserialize, Serialize};

const KID: &str = "kid_73d8caa6c387d46c";
const SECRET: &str = "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67";
const NOW: u64 = 1_735_689_600;
const TTL: u64 = 3600;

#[derive(Serialize, Deserialize)]
struct Policy {
    group_id: String,
    peer_id: String,
}

/// The same claims, as the peers serialise them.
#[derive(Serialize, Deserialize)]
struct PeerClaimsSerde {
    gid: String,
    pid: String,
    ap: Option<Policy>,
}

#[derive(Serialize, Deserialize)]
struct WithExp {
    exp: u64,
    #[serde(flatten)]
    claims: PeerClaimsSerde,
}

fn seed() -> [u8; 32] {
    hex::decode(&SECRET[3..]).unwrap().try_into().unwrap()
}

fn serde_claims() -> PeerClaimsSerde {
    PeerClaimsSerde {
        gid: "myGroup1".into(),
        pid: "myPeer1".into(),
        ap: Some(Policy {
            group_id: "myGroup*".into(),
            peer_id: "*".into(),
        }),
    }
}

fn ours() -> (AccessToken, PeerClaims, Verifier, String) {
    let app = AccessToken::new(KID, SECRET)
        .unwrap()
        .with_clock(FixedClock(NOW));
    let claims = PeerClaims::new("myGroup1", "myPeer1")
        .unwrap()
        .with_allow_policy(PeerPolicy::new("myGroup*", "*").unwrap());
    let verifier = Verifier::new(KeySet::new().with(KID, app.public_key()).unwrap())
        .with_clock(FixedClock(NOW + 1));
    let token = app.create_token(&claims, TTL).unwrap();
    (app, claims, verifier, token)
}

/// PKCS#8 v1 for an Ed25519 seed (RFC 8410), as jsonwebtoken wants it.
fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(seed);
    der
}

fn mint(c: &mut Criterion) {
    let (app, claims, _, _) = ours();
    let message = {
        let t = app.create_token(&claims, TTL).unwrap();
        t.rsplit_once('.').unwrap().0.to_owned()
    };
    let mut group = c.benchmark_group("mint");

    group.bench_function("pulsebeam-token", |b| {
        b.iter(|| {
            app.create_token(black_box(&claims), black_box(TTL))
                .unwrap()
        })
    });
    group.bench_function(
        "pulsebeam-token (parse secret each call, as the original)",
        |b| {
            b.iter(|| {
                AccessToken::new(KID, black_box(SECRET))
                    .unwrap()
                    .with_clock(FixedClock(NOW))
                    .create_token(black_box(&claims), TTL)
                    .unwrap()
            })
        },
    );

    let jwt_key = jsonwebtoken::EncodingKey::from_ed_der(&pkcs8(&seed()));
    let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    jwt_header.kid = Some(KID.to_owned());
    jwt_header.typ = None;
    group.bench_function("jsonwebtoken", |b| {
        b.iter(|| {
            let claims = WithExp {
                exp: NOW + TTL,
                claims: serde_claims(),
            };
            jsonwebtoken::encode(&jwt_header, black_box(&claims), &jwt_key).unwrap()
        })
    });

    let compact_key = ed25519_dalek::SigningKey::from_bytes(&seed());
    let compact_header = jwt_compact::Header::empty().with_key_id(KID);
    let time = jwt_compact::TimeOptions::default();
    group.bench_function("jwt-compact", |b| {
        use jwt_compact::AlgorithmExt as _;
        b.iter(|| {
            let claims = jwt_compact::Claims::new(serde_claims())
                .set_duration(&time, chrono::Duration::seconds(TTL as i64));
            jwt_compact::alg::Ed25519
                .token(&compact_header, black_box(&claims), &compact_key)
                .unwrap()
        })
    });

    let aws = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed()).unwrap();
    group.bench_function("raw sign: aws-lc-rs", |b| {
        b.iter(|| aws.sign(black_box(message.as_bytes())))
    });
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed());
    group.bench_function("raw sign: ed25519-dalek", |b| {
        use ed25519_dalek::Signer as _;
        b.iter(|| dalek.sign(black_box(message.as_bytes())))
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let (_, _, verifier, token) = ours();
    let (message, signature_b64) = token.rsplit_once('.').unwrap();
    let signature: [u8; 64] = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature_b64)
            .unwrap()
            .try_into()
            .unwrap()
    };
    let public = SigningKey::from_seed(&seed()).unwrap().public_key();
    let mut group = c.benchmark_group("verify");

    group.bench_function("pulsebeam-token", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });

    let x = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_bytes())
    };
    let jwt_key = jsonwebtoken::DecodingKey::from_ed_components(&x).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_exp = false;
    group.bench_function("jsonwebtoken", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<WithExp>(black_box(&token), &jwt_key, &validation).unwrap()
        })
    });

    let compact_key = ed25519_dalek::VerifyingKey::from_bytes(public.as_bytes()).unwrap();
    group.bench_function("jwt-compact", |b| {
        use jwt_compact::AlgorithmExt as _;
        b.iter(|| {
            let untrusted = jwt_compact::UntrustedToken::new(black_box(&token)).unwrap();
            jwt_compact::alg::Ed25519
                .validator::<PeerClaimsSerde>(&compact_key)
                .validate(&untrusted)
                .unwrap()
        })
    });

    group.bench_function("raw verify: aws-lc-rs", |b| {
        use aws_lc_rs::signature::VerificationAlgorithm as _;
        b.iter(|| {
            aws_lc_rs::signature::ED25519
                .verify_sig(public.as_bytes(), black_box(message.as_bytes()), &signature)
                .unwrap()
        })
    });
    let dalek_sig = ed25519_dalek::Signature::from_bytes(&signature);
    group.bench_function("raw verify_strict: ed25519-dalek", |b| {
        b.iter(|| {
            compact_key
                .verify_strict(black_box(message.as_bytes()), &dalek_sig)
                .unwrap()
        })
    });
    group.finish();
}

fn parsing_and_policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    group.bench_function("parse api secret", |b| {
        b.iter(|| SigningKey::from_api_secret(black_box(SECRET)).unwrap())
    });
    let policy: PeerPolicy = "room-*:*bob".parse().unwrap();
    group.bench_function("policy match (prefix and suffix)", |b| {
        b.iter(|| policy.allows(black_box("room-42"), black_box("alice-bob")))
    });
    group.bench_function("policy parse", |b| {
        b.iter(|| black_box("room-*:*bob").parse::<PeerPolicy>().unwrap())
    });
    group.finish();
}

criterion_group!(benches, mint, verify, parsing_and_policy);
criterion_main!(benches);
