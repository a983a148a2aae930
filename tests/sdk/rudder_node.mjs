#!/usr/bin/env node
// Sends one identify, track, page and alias through the official, unmodified @rudderstack/rudder-sdk-node client.
//
// Driven by tests/tests/sdk_clients.rs:
//
//     node rudder_node.mjs --host http://127.0.0.1:PORT --write-key KEY --prefix P [--gzip]
//
// Every setting is the client's default except the data plane URL and the write key; the client gzips by default
// (so --gzip changes nothing), and its gzipped requests carry `Content-Type: application/x-www-form-urlencoded`.
// Messages, summary and exit code: see common.mjs.

import { errorText, loadPackage, messages, run } from './common.mjs';

run('rudder_node', async (args) => {
  const { module: Analytics, version } = loadPackage('@rudderstack/rudder-sdk-node');
  const errors = [];
  const options = {
    dataPlaneUrl: args.host,
    // Without an errorHandler a failed upload is only a rejected promise; with one, it is reported here too.
    errorHandler: (err) => errors.push(`errorHandler: ${errorText(err)}`),
  };
  if (args.gzip) options.gzip = true;
  const client = new Analytics(args.writeKey, options);

  const sent = messages(args.prefix);
  for (const { type, ...params } of sent) {
    client[type](params, (err) => {
      if (err) errors.push(`${type} ${params.messageId}: ${errorText(err)}`);
    });
  }
  // The first call is sent at once; the rest wait for flushAt/flushInterval unless flushed. flush(cb) waits for the
  // request in flight, sends the rest, and calls back when it has been answered (or given up on).
  await new Promise((resolve) => {
    client.flush((err) => {
      if (err) errors.push(`flush: ${errorText(err)}`);
      resolve();
    });
  });
  return { client: '@rudderstack/rudder-sdk-node', version, gzip: client.gzip !== false, messages: sent, errors };
});
