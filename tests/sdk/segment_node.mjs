#!/usr/bin/env node
// Sends one identify, track, page and alias through the official, unmodified @segment/analytics-node client.
//
// Driven by tests/tests/sdk_clients.rs:
//
//     node segment_node.mjs --host http://127.0.0.1:PORT --write-key KEY --prefix P
//
// Every setting is the client's default except host and writeKey (this client never gzips; --gzip is refused
// rather than silently ignored). Messages, summary and exit code: see common.mjs.

import { errorText, loadPackage, messages, run } from './common.mjs';

run('segment_node', async (args) => {
  if (args.gzip) throw new Error('@segment/analytics-node has no gzip option');
  const { module, version } = loadPackage('@segment/analytics-node');
  const errors = [];
  const statuses = [];
  const analytics = new module.Analytics({ writeKey: args.writeKey, host: args.host });
  analytics.on('error', (err) => errors.push(`error event: ${err.code}: ${err.reason}`));
  analytics.on('http_response', (res) => statuses.push(res.status));

  const sent = messages(args.prefix);
  for (const { type, ...params } of sent) {
    analytics[type](params, (err) => {
      if (err) errors.push(`${type} ${params.messageId}: ${errorText(err)}`);
    });
  }
  await analytics.closeAndFlush();
  return { client: '@segment/analytics-node', version, gzip: false, messages: sent, statuses, errors };
});
