//! What makes a plain Ed25519 verify as strict as ed25519-dalek's `verify_strict`, for
//! signatures checked outside the crate ([`crate::dangerous::DangerousVerifier`]).
//!
//! `verify_strict` accepts exactly when: `S` is canonical (S < L); `R` decompresses and is not of
//! small order; the key is not of small order; and the canonical encoding of [S]B - [k]A equals
//! the bytes of `R` (k = SHA-512(R || A || M)). A plain RFC 8032 verify that compares encodings
//! (OpenSSL, BoringSSL, AWS-LC, ed25519-dalek's `verify`) checks the last condition with the
//! same bytes in the hash, given a canonically encoded key. So: weak keys are refused when they
//! are read ([`crate::PublicKey::from_bytes`]); signatures by a key that is not canonically
//! encoded are checked by the crate itself ([`is_canonical_key`]); and a signature is refused
//! before the plain verify sees it when `S` is not canonical or `R` is one of the small-order
//! points ([`signature_prechecks`]). An `R` equal to the canonical encoding of [S]B - [k]A is
//! canonical, so only the canonical encodings of the small-order points need to be listed.

/// L, the order of the base point, little-endian.
const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// p = 2^255 - 19, little-endian.
const FIELD_PRIME: [u8; 32] = [
    0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
];

/// The canonical encodings of the eight points of small order (1, 2, 4 and 8).
const SMALL_ORDER: [[u8; 32]; 8] = [
    // the identity (0, 1)
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    // (0, -1), order 2
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // (±sqrt(-1), 0), order 4
    [0; 32],
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0x80,
    ],
    // order 8
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0xfa,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x85,
    ],
];

/// Whether 32 little-endian bytes are below `bound` (also little-endian).
fn less_than(value: &[u8; 32], bound: &[u8; 32]) -> bool {
    for (v, b) in value.iter().rev().zip(bound.iter().rev()) {
        if v != b {
            return v < b;
        }
    }
    false
}

/// Whether `signature` may go to a plain Ed25519 verify: `S` canonical and `R` not of small
/// order. A `false` is an invalid signature under `verify_strict` whatever the equation says.
pub(crate) fn signature_prechecks(signature: &[u8; 64]) -> bool {
    let (r, s) = signature.split_at(32);
    let (Ok(r), Ok(s)) = (<&[u8; 32]>::try_from(r), <&[u8; 32]>::try_from(s)) else {
        return false;
    };
    less_than(s, &ORDER) && !SMALL_ORDER.contains(r)
}

/// Whether a key's 32 bytes are the canonical encoding of its point (y < p), so that a plain
/// verify decodes it as ed25519-dalek does.
pub(crate) fn is_canonical_key(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    // The top bit is the sign of x, not part of y.
    y[31] &= 0x7f;
    less_than(&y, &FIELD_PRIME)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use curve25519_dalek::scalar::Scalar;

    #[test]
    fn small_order_points_are_listed_with_their_canonical_encodings() {
        for bytes in SMALL_ORDER {
            let point = CompressedEdwardsY(bytes).decompress().expect("a point");
            assert!(point.is_small_order());
            assert_eq!(point.compress().to_bytes(), bytes, "canonical");
        }
        let mut all: Vec<_> = SMALL_ORDER.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn order_is_l() {
        let mut below = ORDER;
        below[0] -= 1;
        assert!(bool::from(Scalar::from_canonical_bytes(below).is_some()));
        assert!(bool::from(Scalar::from_canonical_bytes(ORDER).is_none()));
        assert!(less_than(&below, &ORDER) && !less_than(&ORDER, &ORDER));
    }

    #[test]
    fn canonical_keys_are_those_with_y_below_p() {
        // y = p - 1 (that is, -1) is canonical, with either sign bit.
        let mut minus_one = FIELD_PRIME;
        minus_one[0] -= 1;
        assert!(is_canonical_key(&minus_one));
        let mut signed = minus_one;
        signed[31] |= 0x80;
        assert!(is_canonical_key(&signed));
        // y = p and y = p + 18 are not, whatever the sign bit says.
        assert!(!is_canonical_key(&FIELD_PRIME));
        let mut top = [0xffu8; 32];
        top[31] = 0x7f;
        assert!(!is_canonical_key(&top));
        top[31] = 0xff;
        assert!(!is_canonical_key(&top));
        // Every point ed25519-dalek compresses is canonical.
        let base = curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
        for n in 1u64..64 {
            let bytes = (base * Scalar::from(n)).compress().to_bytes();
            assert!(is_canonical_key(&bytes), "{n}B");
        }
    }

    #[test]
    fn prechecks_refuse_exactly_non_canonical_s_and_small_order_r() {
        let mut good = [0u8; 64];
        good[..32]
            .copy_from_slice(curve25519_dalek::constants::ED25519_BASEPOINT_COMPRESSED.as_bytes());
        good[32] = 7;
        assert!(signature_prechecks(&good));
        let mut s_is_l = good;
        s_is_l[32..].copy_from_slice(&ORDER);
        assert!(!signature_prechecks(&s_is_l));
        for r in SMALL_ORDER {
            let mut small = good;
            small[..32].copy_from_slice(&r);
            assert!(!signature_prechecks(&small));
        }
    }
}
