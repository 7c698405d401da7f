// The MCP TypeScript SDK's client against graphgate's model side (issue 17),
// for tests/test_model_side.py: tools with output schemas (the SDK validates
// every structuredContent against the declared schema with Ajv and throws on
// a mismatch), schema resources, prompts, and write confirmation through the
// client's elicitation handler.
//
// Usage:
//   node model_side.mjs --server http://127.0.0.1:8000/mcp --token <bearer>
//     --database acme [--answer accept|decline|cancel] [--write '<cypher>']
// Prints one JSON object: what the client saw. Exit 1 on a client failure.

import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const { values } = parseArgs({
  options: {
    server: { type: 'string' },
    token: { type: 'string' },
    database: { type: 'string' },
    answer: { type: 'string', default: 'accept' },
    write: { type: 'string' },
    read: { type: 'string', default: 'MATCH (n) RETURN count(n) AS n' },
  },
});

const seen = { asked: [], calls: {} };
const client = new Client(
  { name: 'graphgate-model-side', version: '1.0.0' },
  { capabilities: { elicitation: { form: {} } } },
);
client.setRequestHandler(ElicitRequestSchema, async (request) => {
  seen.asked.push(request.params.message);
  if (values.answer === 'accept') return { action: 'accept', content: { value: true } };
  return { action: values.answer };
});

const transport = new StreamableHTTPClientTransport(new URL(values.server), {
  requestInit: { headers: { Authorization: `Bearer ${values.token}` } },
});

async function call(name, args) {
  // callTool validates structuredContent against the tool's outputSchema.
  const result = await client.callTool({ name, arguments: args });
  seen.calls[name] = {
    isError: Boolean(result.isError),
    text: result.content?.[0]?.text,
    structured: result.structuredContent ?? null,
  };
}

try {
  await client.connect(transport);
  const caps = client.getServerCapabilities();
  seen.capabilities = Object.keys(caps ?? {}).sort();
  const tools = (await client.listTools()).tools;
  seen.tools = Object.fromEntries(
    tools.map((t) => [t.name, { annotations: t.annotations, hasOutputSchema: Boolean(t.outputSchema) }]),
  );
  const db = values.database;
  await call('list_databases', {});
  await call('get_schema', { database: db });
  await call('run_query', { database: db, query: values.read });
  await call('explain_query', { database: db, query: values.read });
  await call('query_databases', { databases: [db], query: 'RETURN 1 AS one' });
  if (values.write) await call('run_write_query', { database: db, query: values.write });
  seen.resources = (await client.listResources()).resources.map((r) => r.uri);
  seen.templates = (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
  const read = await client.readResource({ uri: `graph://${db}/schema` });
  seen.schema = JSON.parse(read.contents[0].text);
  try {
    await client.readResource({ uri: 'graph://somebody-else/schema' });
    seen.foreignResource = 'read';
  } catch (error) {
    seen.foreignResource = String(error.message ?? error);
  }
  seen.prompts = (await client.listPrompts()).prompts.map((p) => p.name).sort();
  const prompt = await client.getPrompt({ name: 'explore_database', arguments: { database: db } });
  seen.prompt = prompt.messages[0].content.text;
  await client.close();
  console.log(JSON.stringify(seen));
} catch (error) {
  console.log(JSON.stringify({ ...seen, failure: String(error?.stack ?? error) }));
  process.exit(1);
}
