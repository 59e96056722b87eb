// A real OpenID Connect provider (oidc-provider) on 127.0.0.1 for the OIDC
// tests: `node op.mjs PORT`. Each start makes a fresh RS256 key (a restart is
// a key rotation). Client credentials give RS256 JWT access tokens for the
// audience `urn:sen-pacs`; client `pacs-ci` carries roles ["radiologist"],
// client `pacs-norole` roles ["visitor"]. `GET /test/mint?kind=...` signs
// test tokens that the provider itself would not issue, with its own key
// (expired, wrong-aud, wrong-iss) or MACed with its public key (hs256-pubkey).
import Provider from 'oidc-provider';
import * as jose from 'jose';

const port = Number(process.argv[2] || 9400);
const issuer = `http://127.0.0.1:${port}`;
const audience = 'urn:sen-pacs';
const kid = `k-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
const { privateKey, publicKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
const publicPem = await jose.exportSPKI(publicKey);

const client = (id) => ({
  client_id: id, client_secret: `${id}-secret`,
  grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
});
const provider = new Provider(issuer, {
  clients: [client('pacs-ci'), client('pacs-norole')],
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: false },
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

provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer} ${kid}`));
