// A second, independent OpenID Connect server for graphgate's end-to-end tests.
//
// `oidc-provider` (a certified OpenID Provider implementation) on loopback, set
// up the way an identity team would set it up for graphgate, but with claim
// shapes unlike Keycloak's, so that graphgate has to be pointed at them by
// settings alone:
//
//   * tenants: a top-level claim named by a URL (it contains dots),
//     "https://graphgate.example/groups": ["graphgate-acme", "staff", ...];
//     graphgate reads it with tenant_prefix = "graphgate-";
//   * admin: a single string claim "roles": "graphgate-operator";
//   * starting tenant: a nested claim org.home.
//
// Access tokens are JWTs (RFC 9068, typ at+jwt) signed with ES256, for the one
// resource server graphgate is (RFC 8707 resource indicators): aud is
// <public-url>/mcp and scope is mcp:tools. PKCE S256 is required of public
// clients. Dynamic registration (RFC 7591) is open, for registration = direct;
// the static public client "graphgate-proxy" (redirect <public-url>/auth/callback)
// is for registration = proxy. Users sign in on this server's own login and
// consent pages (below), with password "<username>-password".
//
// Usage: node server.mjs --port 0 --public-url http://127.0.0.1:8000 [--token-ttl 300]
// Prints one JSON line {"event": "ready", "issuer": ...} once it listens; stops on
// SIGTERM/SIGINT, or when its parent closes stdin.

import { generateKeyPairSync, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'public-url': { type: 'string' },
    'token-ttl': { type: 'string', default: '300' },
  },
});
if (!args['public-url']) {
  console.error('usage: node server.mjs --port N --public-url http://127.0.0.1:8000');
  process.exit(2);
}
const publicUrl = args['public-url'].replace(/\/+$/, '');
const RESOURCE = `${publicUrl}/mcp`;
const PROXY_CLIENT = 'graphgate-proxy';
const SCOPE = 'mcp:tools';
const TOKEN_TTL = Number.parseInt(args['token-ttl'], 10);
const GROUPS = 'https://graphgate.example/groups';

// Login name -> the account behind it. Subjects are opaque, as at most providers.
const ACCOUNTS = {
  ann: { sub: 'acct-0f3a91', claims: { [GROUPS]: ['graphgate-acme', 'staff'] } },
  ben: {
    sub: 'acct-2b77c4',
    claims: { [GROUPS]: ['graphgate-acme', 'graphgate-globex:write'], org: { home: 'globex' } },
  },
  ops: { sub: 'acct-9d0e12', claims: { roles: 'graphgate-operator', [GROUPS]: [] } },
  nel: { sub: 'acct-44c8aa', claims: { [GROUPS]: ['staff', 'acme'] } }, // no "graphgate-" entry
  ivy: { sub: 'acct-7ae301', claims: { [GROUPS]: ['graphgate-initech'] } }, // not catalogued
};
const BY_SUB = new Map(Object.entries(ACCOUNTS).map(([login, account]) => [account.sub, { login, ...account }]));

function passwordMatches(login, password) {
  const expected = Buffer.from(`${login}-password`);
  const given = Buffer.from(String(password ?? ''));
  return Object.hasOwn(ACCOUNTS, login) && given.length === expected.length && timingSafeEqual(given, expected);
}

function signingKeys() {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  // An RSA key too: ID tokens default to RS256; access tokens for graphgate use ES256.
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  return [
    { ...ec, kid: `ec-${randomUUID()}`, alg: 'ES256', use: 'sig' },
    { ...rsa, kid: `rsa-${randomUUID()}`, alg: 'RS256', use: 'sig' },
  ];
}

const configuration = {
  clients: [
    {
      client_id: PROXY_CLIENT,
      client_name: 'graphgate (registration = proxy)',
      token_endpoint_auth_method: 'none',
      redirect_uris: [`${publicUrl}/auth/callback`],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
  ],
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  },
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access', SCOPE],
  claims: { openid: ['sub'] },
  jwks: { keys: signingKeys() },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    dPoP: { enabled: false }, // graphgate takes Bearer tokens
    registration: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Clients that send no resource indicator still get a token for graphgate.
      defaultResource: async (ctx, client, oneOf) => oneOf ?? RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: SCOPE,
          audience: RESOURCE,
          accessTokenTTL: TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  // The claims graphgate reads go into the access token itself.
  extraTokenClaims: async (ctx, token) => {
    const account = BY_SUB.get(token.accountId);
    return account ? structuredClone(account.claims) : undefined;
  },
  findAccount: async (ctx, sub) => {
    const account = BY_SUB.get(sub);
    if (!account) return undefined;
    return { accountId: sub, claims: async () => ({ sub, preferred_username: account.login }) };
  },
  interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    AccessToken: TOKEN_TTL,
    Grant: 3600,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: 3600,
    Session: 3600,
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    const items = Object.entries(out).map(([key, value]) => `<li id="${escape(key)}">${escape(value)}</li>`);
    ctx.body = page('Error', `<h1>Sign-in failed</h1><ul>${items.join('')}</ul>`);
  },
};

// Built once the port is known (the issuer names it); no request is handled before that.
let provider;

// -- the login and consent pages ---------------------------------------------------------

function escape(value) {
  return String(value).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head><body>${body}</body></html>`;
}

function loginPage(uid, clientName, message) {
  const error = message ? `<p class="error" role="alert">${escape(message)}</p>` : '';
  return page(
    'Sign in to the test identity provider',
    `<h1>Sign in</h1><p>to continue to ${escape(clientName)}</p>${error}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <label>User name <input name="login" type="text" required autofocus></label>
  <label>Password <input name="password" type="password" required></label>
  <button type="submit">Sign in</button>
</form>`,
  );
}

function consentPage(uid, clientName, details) {
  const scopes = new Set(details.missingOIDCScope ?? []);
  for (const granted of Object.values(details.missingResourceScopes ?? {})) {
    for (const scope of granted) scopes.add(scope);
  }
  const resources = Object.keys(details.missingResourceScopes ?? {});
  return page(
    'Allow access?',
    `<h1>Allow ${escape(clientName)}?</h1>
<p>It asks for: ${[...scopes].map(escape).join(', ') || 'nothing new'}</p>
<p>On: ${resources.map(escape).join(', ') || 'this provider'}</p>
<form method="post" action="/interaction/${escape(uid)}/confirm">
  <button type="submit" name="decision" value="allow">Allow</button>
  <button type="submit" name="decision" value="deny">Deny</button>
</form>`,
  );
}

async function readForm(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(html);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<p>This sign-in request is not the one in progress.</p>'));
    return;
  }
  const { prompt, params, session } = details;
  const client = await provider.Client.find(params.client_id);
  const clientName = client?.clientName || params.client_id;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') send(res, 200, loginPage(uid, clientName));
    else if (prompt.name === 'consent') send(res, 200, consentPage(uid, clientName, prompt.details));
    else send(res, 501, page('Error', `<p>prompt ${escape(prompt.name)} is not supported</p>`));
    return;
  }
  if (req.method !== 'POST') {
    send(res, 405, page('Error', '<p>method not allowed</p>'));
    return;
  }
  const form = await readForm(req);
  if (action === 'login' && prompt.name === 'login') {
    const login = form.get('login') ?? '';
    if (!passwordMatches(login, form.get('password'))) {
      send(res, 200, loginPage(uid, clientName, 'Invalid user name or password.'));
      return;
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: ACCOUNTS[login].sub } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  if (action === 'confirm' && prompt.name === 'consent') {
    if (form.get('decision') !== 'allow') {
      await provider.interactionFinished(
        req,
        res,
        { error: 'access_denied', error_description: 'The user declined the request.' },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  send(res, 400, page('Error', `<p>unexpected ${escape(action ?? 'request')} for prompt ${escape(prompt.name)}</p>`));
}

// -- the server ----------------------------------------------------------------------------

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]{1,64})(?:\/(login|confirm))?$/;
let handle;
const server = createServer((req, res) => {
  const match = INTERACTION.exec(new URL(req.url, 'http://127.0.0.1').pathname);
  if (!match) {
    handle(req, res);
    return;
  }
  interaction(req, res, match[1], match[2]).catch((error) => {
    const expired = error instanceof errors.SessionNotFound;
    if (!res.headersSent) {
      send(res, expired ? 400 : 500, page('Error', `<p>${escape(expired ? 'This sign-in has expired; start again.' : error.message)}</p>`));
    }
  });
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  server.close();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop); // the test process went away
process.stdin.on('error', stop);
process.stdin.resume();

server.listen(Number.parseInt(args.port, 10), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = new Provider(issuer, configuration);
  handle = provider.callback();
  process.stdout.write(`${JSON.stringify({ event: 'ready', issuer, resource: RESOURCE, proxy_client: PROXY_CLIENT })}\n`);
});
