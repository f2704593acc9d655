'use strict';
/**
 * Mints the access tokens both servers accept (SPEC section 3): HS256 with
 * the secret from JWT_SECRET; claims sub, type "access", iat, exp, jti, plus
 * iss / aud when JWT_ISSUER / JWT_AUDIENCE are set (as Huddle checks them then).
 * Tokens are never printed.
 */

const crypto = require('node:crypto');
const jwt = require('jsonwebtoken');

/**
 * The signing key from JWT_SECRET, as a KeyObject: given a string,
 * jsonwebtoken 9 first tries to parse it as a PEM key on every sign (~50x slower).
 */
function secretFromEnv() {
  const secret = process.env.JWT_SECRET || '';
  if (!secret) throw new Error('JWT_SECRET is not set');
  return crypto.createSecretKey(Buffer.from(secret, 'utf8'));
}

const WRONG_KEY = crypto.createSecretKey(crypto.randomBytes(32));

/**
 * kind: 'valid' (expires in ttlS), 'expired' (expired an hour ago, well past
 * any leeway) or 'invalid' (signed with another secret).
 */
function mintToken(secret, sub, kind = 'valid', ttlS = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: String(sub), type: 'access', jti: crypto.randomUUID() };
  if (kind === 'expired') {
    claims.iat = now - 7200;
    claims.exp = now - 3600;
  } else {
    claims.iat = now;
    claims.exp = now + ttlS;
  }
  if (process.env.JWT_ISSUER) claims.iss = process.env.JWT_ISSUER;
  if (process.env.JWT_AUDIENCE) claims.aud = process.env.JWT_AUDIENCE;
  const key = kind === 'invalid' ? WRONG_KEY : secret;
  return jwt.sign(claims, key, { algorithm: 'HS256' });
}

/** A range "A-B" (or one id "A") of user ids; connection i uses the i-th id, cycling. */
function parseUserRange(text) {
  const m = /^(\d+)(?:-(\d+))?$/.exec(text);
  if (!m) throw new Error(`--users must look like 1-2000, got ${JSON.stringify(text)}`);
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  if (first < 1 || last < first) throw new Error('--users: need 1 <= first <= last');
  return { first, last, size: last - first + 1 };
}

function userFor(range, index) {
  return range.first + (index % range.size);
}

/**
 * Comma-separated user ranges ("1-2000,2001-5000"), one per phase of a storm:
 * each phase connects every user of its range once. Ranges may not overlap, so
 * that every connection of the run is a distinct user.
 */
function parsePhases(text) {
  const ranges = text.split(',').map((part) => parseUserRange(part.trim()));
  const sorted = [...ranges].sort((a, b) => a.first - b.first);
  for (let k = 1; k < sorted.length; k += 1) {
    if (sorted[k].first <= sorted[k - 1].last) throw new Error('--phases: ranges overlap');
  }
  return ranges;
}

module.exports = { secretFromEnv, mintToken, parseUserRange, parsePhases, userFor };
