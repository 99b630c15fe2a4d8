// Verifies tokens minted by pulsebeam-token with the `jose` library, given only the JWKS.
// Usage: node verify.mjs INTEROP_JSON   (a file holding the output of `cargo run --example interop`)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const jwks = createLocalJWKSet(input.jwks);

test('jose verifies every token with only the JWKS', async () => {
  assert.equal(input.tokens.length, 2);
  for (const token of input.tokens) {
    const header = decodeProtectedHeader(token);
    assert.deepEqual(header, { alg: 'EdDSA', kid: input.kid });
    const { payload } = await jwtVerify(token, jwks, { algorithms: ['EdDSA'] });
    assert.equal(payload.gid, '群组');
    assert.equal(payload.pid, 'ピア🙂');
    assert.deepEqual(payload.ap, { group_id: 'room-*', peer_id: '*' });
    assert.equal(payload.exp, input.exp);
  }
});

test('jose rejects a token whose payload was changed', async () => {
  const [h, p, s] = input.tokens[0].split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  claims.pid = 'mallory';
  const forged = [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.');
  await assert.rejects(jwtVerify(forged, jwks, { algorithms: ['EdDSA'] }), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
});
