// What the two Node client scripts share: arguments, loading a package from TRIBUTARY_NODE_MODULES, the four
// messages every client sends, and the JSON summary / exit code that tests/tests/sdk_clients.rs reads.
//
// The packages come from TRIBUTARY_NODE_MODULES (set by scripts/test.sh; default: ./node/node_modules beside
// this file), loaded with createRequire because ES modules ignore NODE_PATH.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** `--host URL --write-key KEY --prefix P [--gzip]`. */
export function parseArgs(argv) {
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

/** The package `name` (e.g. `@segment/analytics-node`) and its installed version. */
export function loadPackage(name) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const modules = path.resolve(process.env.TRIBUTARY_NODE_MODULES || path.join(here, 'node', 'node_modules'));
  const require = createRequire(path.join(modules, '..', 'package.json'));
  const version = JSON.parse(readFileSync(path.join(modules, ...name.split('/'), 'package.json'))).version;
  return { module: require(name), version };
}

/** An error as one line of text. */
export function errorText(err) {
  return err && err.message ? err.message : String(err);
}

/**
 * Identify, track, page and alias with explicit messageIds (`P-identify`, ...) and an explicit timestamp five
 * minutes in the past (whole milliseconds, what a JS Date holds anyway), so the server's clock-skew correction can
 * be checked.
 */
export function messages(p) {
  const timestamp = new Date(Date.now() - 5 * 60 * 1000);
  const userId = `${p}-user`;
  return [
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
}

/**
 * Runs `send(args)`, which returns `{client, version, gzip, messages, errors, ...}`; prints that summary (plus the
 * host and the explicit timestamp) as the LAST line on stdout — clients may log to stdout before it — and exits
 * non-zero if the client reported any error.
 */
export function run(script, send) {
  const main = async () => {
    const args = parseArgs(process.argv.slice(2));
    const result = await send(args);
    const summary = { ...result, host: args.host, timestamp: result.messages[0].timestamp.toISOString() };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    if (result.errors.length > 0) {
      process.stderr.write(`${script}: client reported errors:\n  ${result.errors.join('\n  ')}\n`);
      return 1;
    }
    return 0;
  };
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`${script}: ${err && err.stack ? err.stack : err}\n`);
      process.exit(2);
    },
  );
}
