#!/usr/bin/env node
// Sends one identify, track, page and alias through the official, unmodified @rudderstack/rudder-sdk-node client.
//
// Driven by tests/tests/sdk_clients.rs:
//
//     node rudder_node.mjs --host http://127.0.0.1:PORT --write-key KEY --prefix P [--gzip]
//
// The packages come from TRIBUTARY_NODE_MODULES (set by scripts/test.sh; default: ./node/node_modules beside
// this file), loaded with createRequire because ES modules ignore NODE_PATH. Every setting is the client's default
// except the data plane URL and the write key; the client gzips by default (so --gzip changes nothing), and its
// gzipped requests carry `Content-Type: application/x-www-form-urlencoded`. Each call has an explicit messageId
// (`P-identify`, ...) and an explicit timestamp five minutes in the past. The client logs to the console (stdout
// included), so the summary is the LAST line on stdout; the exit code is non-zero if the client reported any error.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function parseArgs(argv) {
  const args = { gzip: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--host') args.host = value();
    else if (flag === '--write-key') args.writeKey = value();
    else if (flag === '--prefix') args.prefix = value();
    else if (flag === '--gzip') args.gzip = true;
    else throw new Error(`unknown argument ${flag}`);
  }
  for (const required of ['host', 'writeKey', 'prefix']) {
    if (!args[required]) throw new Error(`missing --${required.replace('K', '-k')}`);
  }
  return args;
}

function nodeModules() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(process.env.TRIBUTARY_NODE_MODULES || path.join(here, 'node', 'node_modules'));
}

/** Five minutes ago, whole milliseconds (what a JS Date holds anyway). */
function fixedTimestamp() {
  return new Date(Date.now() - 5 * 60 * 1000);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const modules = nodeModules();
  const require = createRequire(path.join(modules, '..', 'package.json'));
  const Analytics = require('@rudderstack/rudder-sdk-node');
  const version = JSON.parse(
    readFileSync(path.join(modules, '@rudderstack', 'rudder-sdk-node', 'package.json')),
  ).version;

  const errors = [];
  const options = {
    dataPlaneUrl: args.host,
    // Without an errorHandler a failed upload is only a rejected promise; with one, it is reported here too.
    errorHandler: (err) => errors.push(`errorHandler: ${err && err.message ? err.message : err}`),
  };
  if (args.gzip) options.gzip = true;
  const client = new Analytics(args.writeKey, options);
  const callback = (what) => (err) => {
    if (err) errors.push(`${what}: ${err && err.message ? err.message : err}`);
  };

  const p = args.prefix;
  const timestamp = fixedTimestamp();
  const userId = `${p}-user`;
  const messages = [
    {
      type: 'identify',
      userId,
      traits: { email: `${p}@example.com`, name: `${p} Tester`, plan: 'enterprise' },
      messageId: `${p}-identify`,
      timestamp,
    },
    {
      type: 'track',
      userId,
      event: 'Order Completed',
      properties: {
        orderId: `${p}-order`,
        revenue: 42.5,
        currency: 'EUR',
        products: [
          { productId: `${p}-sku-1`, name: 'Pen', price: 2.5, quantity: 5 },
          { productId: `${p}-sku-2`, name: 'Notebook', price: 30.0, quantity: 1 },
        ],
      },
      messageId: `${p}-track`,
      timestamp,
    },
    {
      type: 'page',
      userId,
      name: 'Pricing',
      properties: { url: `https://example.com/${p}/pricing`, title: 'Pricing' },
      messageId: `${p}-page`,
      timestamp,
    },
    { type: 'alias', previousId: `${p}-anon`, userId, messageId: `${p}-alias`, timestamp },
  ];
  for (const { type, ...params } of messages) {
    client[type](params, callback(`${type} ${params.messageId}`));
  }
  // The first call is sent at once; the rest wait for flushAt/flushInterval unless flushed. flush(cb) waits for the
  // request in flight, sends the rest, and calls back when it has been answered (or given up on).
  await new Promise((resolve) => {
    client.flush((err) => {
      if (err) errors.push(`flush: ${err && err.message ? err.message : err}`);
      resolve();
    });
  });

  const summary = {
    client: '@rudderstack/rudder-sdk-node',
    version,
    host: args.host,
    gzip: client.gzip !== false,
    timestamp: timestamp.toISOString(),
    messages,
    errors,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (errors.length > 0) {
    process.stderr.write(`rudder_node: client reported errors:\n  ${errors.join('\n  ')}\n`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`rudder_node: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
