// A webhook receiver's check, as a TypeScript or JavaScript receiver makes it: the
// Standard Webhooks reference library (npm `standardwebhooks`) verifies a delivery.
//
// Reads a JSON array of {secret, body (base64 of the raw body), headers} on stdin and
// writes a JSON array of answers: {event} (the verified, parsed body) or {error}.
'use strict';

const { Webhook } = require('standardwebhooks');

let input = '';
process.stdin.on('data', (chunk) => {
  input += chunk;
});
process.stdin.on('end', () => {
  const answers = JSON.parse(input).map(({ secret, body, headers }) => {
    try {
      const event = new Webhook(secret).verify(Buffer.from(body, 'base64'), headers);
      return { event };
    } catch (error) {
      return { error: String(error.message || error) };
    }
  });
  process.stdout.write(JSON.stringify(answers));
});
