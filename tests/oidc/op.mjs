// A real OpenID Connect provider (oidc-provider) on 127.0.0.1 for the OIDC
// tests: `node op.mjs PORT [--tls CERT.pem KEY.pem] [--redirect URI]`. With
// --tls it serves HTTPS (issuer https://127.0.0.1:PORT). Each start makes a
// fresh RS256 key (a restart is a key rotation). Client credentials give RS256 JWT access tokens for the
// audience `urn:sen-pacs`; client `pacs-ci` carries roles ["radiologist"],
// client `pacs-norole` roles ["visitor"]. `GET /test/mint?kind=...` signs
// test tokens that the provider itself would not issue, with its own key
// (expired, wrong-aud, wrong-iss) or MACed with its public key (hs256-pubkey).
//
// With --redirect, client `pacs-web` (secret `pacs-web-secret`) may sign in
// users with authorization code + PKCE to that redirect URI, through the
// provider's development login and consent pages (any login, any password).
// Users whose login starts with `dr.` carry roles ["radiologist"] in their ID
// token; everyone else ["visitor"].
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const argv = process.argv.slice(2);
const port = Number(argv[0] || 9400);
const opt = (name, n = 1) => {
  const i = argv.indexOf(name);
  return i < 0 ? undefined : argv.slice(i + 1, i + 1 + n);
};
const tls = opt('--tls', 2);
const redirect = opt('--redirect')?.[0];
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
const audience = 'urn:sen-pacs';
const kid = `k-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
const { privateKey, publicKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
const publicPem = await jose.exportSPKI(publicKey);

const client = (id) => ({
  client_id: id, client_secret: `${id}-secret`,
  grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
});
const clients = [client('pacs-ci'), client('pacs-norole')];
if (redirect) {
  clients.push({
    client_id: 'pacs-web', client_secret: 'pacs-web-secret',
    grant_types: ['authorization_code'], response_types: ['code'], redirect_uris: [redirect],
    token_endpoint_auth_method: 'client_secret_basic',
  });
}
const provider = new Provider(issuer, {
  clients,
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({
      sub, preferred_username: sub, roles: sub.startsWith('dr.') ? ['radiologist'] : ['visitor'],
    }),
  }),
  claims: { openid: ['sub'], profile: ['preferred_username', 'roles'] },
  // Scope claims in the ID token too (not only at the userinfo endpoint).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: Boolean(redirect) },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        audience, scope: 'dicom.read', accessTokenFormat: 'jwt', accessTokenTTL: 300,
      }),
    },
  },
  extraTokenClaims: (ctx, token) => ({
    roles: token.clientId === 'pacs-ci' ? ['radiologist'] : ['visitor'],
  }),
});

provider.use(async (ctx, next) => {
  if (ctx.path !== '/test/mint') return next();
  const kind = ctx.query.kind;
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: 'pacs-ci', roles: ['radiologist'], iss: issuer, aud: audience, iat: now, exp: now + 300 };
  if (kind === 'expired') { claims.iat = now - 7200; claims.exp = now - 3600; }
  else if (kind === 'wrong-aud') claims.aud = 'urn:someone-else';
  else if (kind === 'wrong-iss') claims.iss = 'http://127.0.0.1:1';
  else if (kind === 'not-yet') claims.nbf = now + 3600;
  let jwt;
  if (kind === 'hs256-pubkey') {
    jwt = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid })
      .sign(new TextEncoder().encode(publicPem));
  } else {
    jwt = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid })
      .sign(privateKey);
  }
  ctx.type = 'text/plain';
  ctx.body = jwt;
});

const ready = () => console.log(`ready ${issuer} ${kid}`);
if (tls) {
  https.createServer({ cert: readFileSync(tls[0]), key: readFileSync(tls[1]) }, provider.callback())
    .listen(port, '127.0.0.1', ready);
} else {
  provider.listen(port, '127.0.0.1', ready);
}
