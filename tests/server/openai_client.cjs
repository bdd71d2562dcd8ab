// The API through the official `openai` npm client: models, chat and completions, streamed and
// whole (the same text for the same seed), usage, and the client's typed errors.
// Usage: node openai_client.cjs BASE_URL API_KEY
const OpenAI = require('openai');
const assert = require('node:assert/strict');

async function main() {
  const [base, key] = process.argv.slice(2);
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });

  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  const model = models.data[0].id;

  const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Name a colour.' }];
  const ask = { model, messages, max_tokens: 12, seed: 4, temperature: 0.7 };
  const whole = await client.chat.completions.create(ask);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  assert.ok(['stop', 'length'].includes(whole.choices[0].finish_reason));
  assert.ok(whole.usage.prompt_tokens > 0 && whole.usage.completion_tokens > 0);

  const stream = await client.chat.completions.create({ ...ask, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
  }
  assert.ok(chunks >= 2, `only ${chunks} chunks`);  // the role, the text, the end (tokens without text send nothing)
  assert.equal(text, whole.choices[0].message.content);
  assert.deepEqual(usage, whole.usage);

  const done = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, seed: 2 });
  assert.equal(done.object, 'text_completion');
  let streamed = '';
  for await (const c of await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, seed: 2, stream: true }))
    streamed += c.choices[0]?.text ?? '';
  assert.equal(streamed, done.choices[0].text);

  await assert.rejects(client.chat.completions.create({ ...ask, temperature: 'hot' }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.status, 400);
    assert.equal(e.param, 'temperature');
    return true;
  });
  const stranger = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(stranger.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  await assert.rejects(client.get('/nothing'), (e) => e instanceof OpenAI.NotFoundError);
  console.log(`openai client: ok ("${text}")`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
