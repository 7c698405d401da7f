// The MCP TypeScript SDK's client, signing in to graphgate with OAuth, for
// tests/test_e2e_ts_client.py.
//
// It is what an MCP client built on @modelcontextprotocol/sdk does (Claude Code
// and others): connect → 401 → the SDK discovers protected resource metadata
// and the authorization server, registers, and hands an authorization URL to
// the app's OAuthClientProvider.redirectToAuthorization; the user signs in in a
// browser; the browser lands on the app's redirect URI with a code; the app
// calls transport.finishAuth(code) and connects again.
//
// Here the "browser" is the Python test: the authorization URL is printed as a
// JSON line {"event": "authorize", "url": ...}, and the URL the browser was
// finally sent to comes back as one JSON line on stdin: {"callback": "<url>"}.
// Every step is reported as a JSON line on stdout; tokens and secrets never are
// (only the decoded claims of the access token).
//
// With --client-metadata-url (an https URL) the provider offers it as
// `clientMetadataUrl`: where the authorization server's metadata says
// client_id_metadata_document_supported, the SDK uses that URL as its client_id
// (a Client ID Metadata Document) instead of registering.
//
// Usage:
//   node client.mjs --server http://127.0.0.1:8000/mcp --user alice \
//     --redirect-uri http://127.0.0.1:33418/callback \
//     [--client-metadata-url https://app.example/client.json] \
//     [--calls '[{"name": "list_databases", "arguments": {}}]'] [--timeout 120]
// Exit status: 0 when every step ran (tool errors included), 1 when the client
// failed (the error is reported), 2 for bad usage, 3 on timeout.

import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const DEFAULT_CALLS = [{ name: 'list_databases', arguments: {} }];

function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function fail(stage, error, status = 1) {
  emit('error', {
    stage,
    name: error?.constructor?.name ?? 'Error',
    code: typeof error?.code === 'number' ? error.code : undefined,
    message: String(error?.message ?? error),
  });
  process.exitCode = status;
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      server: { type: 'string' },
      user: { type: 'string' },
      'redirect-uri': { type: 'string' },
      'client-metadata-url': { type: 'string' },
      calls: { type: 'string' },
      timeout: { type: 'string', default: '120' },
    },
  }));
  if (!args.server || !args.user || !args['redirect-uri']) throw new Error('--server, --user and --redirect-uri are required');
} catch (error) {
  fail('usage', error, 2);
  process.exit(2);
}

const timeout = Number.parseFloat(args.timeout) * 1000;
setTimeout(() => {
  emit('error', { stage: 'timeout', message: `no result within ${args.timeout} s` });
  process.exit(3);
}, timeout).unref();

function claimsOf(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return null; // opaque
  try {
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return null;
  }
}

// -- the lines the "browser" sends back ---------------------------------------------------

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
const waiting = [];
const received = [];
lines.on('line', (line) => {
  if (!line.trim()) return;
  if (waiting.length) waiting.shift()(line);
  else received.push(line);
});
lines.on('close', () => {
  for (const resolve of waiting.splice(0)) resolve(null);
});
function nextLine() {
  if (received.length) return Promise.resolve(received.shift());
  return new Promise((resolve) => waiting.push(resolve));
}

// -- OAuthClientProvider: what the app gives the SDK ----------------------------------------

class TestProvider {
  constructor(user, redirectUri, clientMetadataUrl) {
    this.user = user;
    this._redirectUri = redirectUri;
    this._clientMetadataUrl = clientMetadataUrl;
    this._state = randomBytes(16).toString('base64url');
    this._clientInformation = undefined;
    this._tokens = undefined;
    this._codeVerifier = undefined;
    this._discovery = undefined;
    this.authorizations = 0;
  }

  get redirectUrl() {
    return this._redirectUri;
  }

  get clientMetadataUrl() {
    return this._clientMetadataUrl;
  }

  get clientMetadata() {
    return {
      client_name: `graphgate e2e ts (${this.user})`,
      redirect_uris: [this._redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state() {
    return this._state;
  }

  clientInformation() {
    return this._clientInformation;
  }

  saveClientInformation(information) {
    this._clientInformation = information;
    emit('registered', {
      client_id: information.client_id,
      issuer: information.issuer,
      redirect_uris: information.redirect_uris,
    });
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
    emit('tokens', {
      token_type: tokens.token_type,
      expires_in: tokens.expires_in,
      scope: tokens.scope,
      refresh_token: Boolean(tokens.refresh_token),
      issuer: tokens.issuer,
      claims: claimsOf(tokens.access_token),
    });
  }

  redirectToAuthorization(authorizationUrl) {
    this.authorizations += 1;
    emit('authorize', { url: authorizationUrl.href });
  }

  saveCodeVerifier(codeVerifier) {
    this._codeVerifier = codeVerifier;
  }

  codeVerifier() {
    if (!this._codeVerifier) throw new Error('no code verifier saved');
    return this._codeVerifier;
  }

  saveDiscoveryState(state) {
    this._discovery = state;
    const metadata = state.authorizationServerMetadata ?? {};
    emit('discovered', {
      authorization_server: state.authorizationServerUrl,
      resource: state.resourceMetadata?.resource,
      issuer: metadata.issuer,
      authorization_endpoint: metadata.authorization_endpoint,
      token_endpoint: metadata.token_endpoint,
      registration_endpoint: metadata.registration_endpoint,
    });
  }

  discoveryState() {
    return this._discovery;
  }
}

// Every HTTP request the SDK makes (MCP and OAuth alike), without headers or bodies.
async function recordingFetch(input, init) {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  const response = await fetch(input, init);
  emit('http', { method, url: `${url.origin}${url.pathname}`, status: response.status });
  return response;
}

// -- the app --------------------------------------------------------------------------------

const serverUrl = new URL(args.server);
const provider = new TestProvider(args.user, args['redirect-uri'], args['client-metadata-url']);

function connect() {
  const transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider, fetch: recordingFetch });
  const client = new Client({ name: 'graphgate-e2e-ts', version: '1.0.0' });
  return { client, transport };
}

async function receiveCallback() {
  const line = await nextLine();
  if (line === null) throw new Error('stdin closed before the callback arrived');
  const { callback } = JSON.parse(line);
  const url = new URL(callback);
  const query = url.searchParams;
  emit('callback', {
    redirect: `${url.origin}${url.pathname}`,
    code: query.has('code'),
    state_matches: query.get('state') === provider.state(),
    iss: query.get('iss'),
    error: query.get('error'),
  });
  if (query.get('error')) throw new Error(`authorization refused: ${query.get('error')}`);
  if (query.get('state') !== provider.state()) throw new Error('state mismatch in the callback');
  return query.get('code');
}

async function main() {
  let calls;
  try {
    calls = args.calls ? JSON.parse(args.calls) : DEFAULT_CALLS;
  } catch (error) {
    fail('usage', error, 2);
    return;
  }
  let { client, transport } = connect();
  try {
    await client.connect(transport);
    emit('connected', { authorized: false });
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) {
      fail('connect', error);
      return;
    }
    // The SDK stopped at redirectToAuthorization: sign in, then finish with the code.
    let code;
    try {
      code = await receiveCallback();
      await transport.finishAuth(code);
    } catch (finishError) {
      fail('finish_auth', finishError);
      return;
    }
    await transport.close().catch(() => {});
    ({ client, transport } = connect());
    try {
      await client.connect(transport);
    } catch (reconnectError) {
      fail('reconnect', reconnectError);
      return;
    }
    emit('connected', { authorized: true });
  }
  try {
    const tools = await client.listTools();
    emit('tools', { names: tools.tools.map((t) => t.name).sort() });
    for (const call of calls) {
      const result = await client.callTool({ name: call.name, arguments: call.arguments ?? {} });
      const text = result.content?.find((item) => item.type === 'text')?.text ?? null;
      emit('tool', { name: call.name, is_error: Boolean(result.isError), text });
    }
  } catch (error) {
    fail('call', error);
    return;
  } finally {
    await client.close().catch(() => {});
  }
  emit('done', { authorizations: provider.authorizations });
}

main()
  .catch((error) => fail('unexpected', error))
  .finally(() => {
    lines.close();
    process.stdin.destroy();
  });
