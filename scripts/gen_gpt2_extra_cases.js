#!/usr/bin/env node
// Generates tests/data/gpt2_extra_cases.jsonl: {"text", "ids"} lines from the reference encoder
// (npm gpt-3-encoder@1.1.4) for texts the shared fixture does not cover: mixed scripts, emoji with
// modifiers and ZWJ, zero-width / non-breaking / exotic spaces, tabs and CRLF, long digit runs,
// code, punctuation runs that hit the reference's comma-keyed merge table, and seeded random mixes.
// Usage:
//   d=$(mktemp -d) && (cd $d && npm pack gpt-3-encoder@1.1.4 && tar xzf gpt-3-encoder-1.1.4.tgz)
//   node scripts/gen_gpt2_extra_cases.js $d/package > tests/data/gpt2_extra_cases.jsonl
'use strict';
const path = require('path');
const { encode, decode } = require(path.resolve(process.argv[2] || '.'));

const fixed = [
  '', ' ', '  ', '\t', '\n', '\r\n', ' \n ', '\n\n\n', 'a\r\nb\r\n', '\ttab\tseparated\tvalues\t',
  'trailing spaces   ', '   leading spaces', 'two  spaces   three    four', 'x \t y \n\t z',
  'non\u00a0breaking\u00a0space', 'narrow\u202fnbsp', 'ideographic\u3000space', 'en\u2002em\u2003thin\u2009',
  'zero\u200bwidth\u200bspace', 'zwj\u200dzwnj\u200c', '\ufeffBOM at start', 'line\u2028sep\u2029para',
  'next\u0085line', 'unit\u001fsep\u001cfile', 'vertical\u000btab\u000cfeed', ' \u00a0 \u00a0x',
  '\u00a0\u00a0word', 'a \u00a0b', 'a\u00a0 b',
  "I'm can't won't you're we've they'll he'd it's", "I'M CAN'T", "''", "'", "'s'", "rock'n'roll",
  "It\u2019s curly", "don't''s", "'ll've'd", " 's", "x's's",
  '12345678901234567890123456789012345678901234567890', '3.14159 2,718 1e-10 0xFF 1_000_000',
  '\u00b2\u00b3\u00b9 \u2160\u2161\u216b \uff11\uff12\uff13 \u0663\u0664 \u096a\u096b',
  '\ud83d\udc4d\ud83c\udffd thumbs', '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66 family',
  '\ud83c\uddeb\ud83c\uddf7 flag \ud83c\udff3\ufe0f\u200d\ud83c\udf08', '\u2764\ufe0f\ud83d\udd25\ud83d\ude02\ud83d\ude02\ud83d\ude02',
  '\u4f60\u597d\uff0c\u4e16\u754c\uff01 \u3053\u3093\u306b\u3061\u306f\u3001\u4e16\u754c\u3002 \uc548\ub155\ud558\uc138\uc694',
  '\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd',
  '\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35',
  'Cafe\u0301 na\u0308ive r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u0110o\u00e0n', '\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0393\u03b5\u03b9\u03ac',
  '\u{1d400}\u{1d401} math bold \u{20000}\u{2a6d6} ext-B', '\u2200x\u2208\u211d: x\u00b2 \u2265 0 \u2192 \u221e',
  'def f(x):\n    return x ** 2  # square\n', 'for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\r\n',
  '{"a": 1, "b": [1, 2, 3], "c": {"d": "e"}}', '["a","b","c"]', "['x','y']", '{},"\'",\'',
  '"],"a"]', '),",.",', '\u0120,"', 'a.,"b', '<|endoftext|> <|user|>hi<|enduser|>',
  'https://example.com/path?q=1&r=2#frag', 'user@example.com', '$ ls -la | grep "\\.cpp$" > out.txt',
  '-----', '.....', '!!!???', '    ', '\n    \n', 'end.\n\n', '\u00ff\u00fe\u00fd',
  'a'.repeat(300), '9'.repeat(500), ' '.repeat(200) + 'x', 'ab'.repeat(150) + ' cd',
];

// Deterministic PRNG (mulberry32) so the file is reproducible.
let seed = 20240607;
function rand() {
  seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pool = Array.from(' \t\n\r\u00a0\u200b\u3000aZeé\u00dfñ09\u00b2\u2163\uff15\'",.;:!?()[]{}<>|-_=+*/\\#@$%^&~`' +
    '\u4e2d\u6587\u3042\u30a2\u0627\u05d0\u0905\u093f\u0e01\u0e34\u0301\u200d\ufe0f\ud83d\ude00\ud83c\udffd');
const punct = Array.from('",\'[](){}. \u0120');
const random = [];
for (let i = 0; i < 300; i++) {
  const src = i % 3 === 2 ? punct : pool;
  const n = 1 + Math.floor(rand() * 40);
  let s = '';
  for (let k = 0; k < n; k++) s += src[Math.floor(rand() * src.length)];
  random.push(s);
}

// Long pieces (no spaces) take the tokenizer's heap merge loop: check it on random runs.
const runs = ['abcdefghijklmnopqrstuvwxyz', 'etaoinshr', '0123456789', '",\'[](){}.', '\u00e9\u00e0\u00fc\u00df\u4e2d\u6587'];
for (let i = 0; i < 10; i++) {
  const a = Array.from(runs[i % runs.length]);
  const n = 300 + Math.floor(rand() * 1700);
  let s = '';
  for (let k = 0; k < n; k++) s += a[Math.floor(rand() * a.length)];
  random.push(s);
}

let skipped = 0;
for (const text of fixed.concat(random)) {
  const ids = encode(text);
  // (The reference's TextDecoder drops a leading U+FEFF, so that one case only checks encode.)
  const roundTrips = decode(ids) === text || text.startsWith('\ufeff');
  if (ids.some(x => x === undefined) || !roundTrips) { skipped++; continue; }
  process.stdout.write(JSON.stringify({ text, ids }) + '\n');
}
process.stderr.write(`skipped ${skipped} texts the reference cannot round-trip\n`);
