// Runs the CloudFront Function as CloudFront would (the same source, formats templated in) on
// the Accept table in accept_cases.json. Run: node --test infra/next_image_cdk/cloudfront/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const here = new URL('.', import.meta.url);
const source = readFileSync(new URL('normalize_accept.js', here), 'utf8');
const { cases } = JSON.parse(readFileSync(new URL('accept_cases.json', here), 'utf8'));

function load(formats) {
    const code = source.replace('__NEXT_IMAGE_FORMATS__', JSON.stringify(formats));
    return vm.runInNewContext(`${code}\n;({ handler })`);
}

function viewerRequest(accept, extraHeaders = {}) {
    const headers = { host: { value: 'd111.cloudfront.net' }, ...extraHeaders };
    if (accept !== null) {
        headers.accept = { value: accept };
    }
    return {
        version: '1.0',
        context: { eventType: 'viewer-request' },
        viewer: { ip: '192.0.2.1' },
        request: {
            method: 'GET',
            uri: '/_next/image',
            querystring: { url: { value: '/a.png' }, w: { value: '640' }, q: { value: '75' } },
            headers,
            cookies: {},
        },
    };
}

for (const { formats, accept, expected } of cases) {
    test(`formats=${formats.join('+')} accept=${JSON.stringify(accept)}`, () => {
        const { handler } = load(formats);
        const out = handler(viewerRequest(accept));
        const want = expected === null ? accept : expected;
        assert.equal(out.headers.accept.value, want);
    });
}

test('leaves the uri, query string and other headers alone', () => {
    const { handler } = load(['image/avif', 'image/webp']);
    const event = viewerRequest('image/avif,*/*', { 'user-agent': { value: 'x' } });
    const before = JSON.parse(JSON.stringify(event.request));
    const out = handler(event);
    assert.equal(out.uri, before.uri);
    assert.equal(JSON.stringify(out.querystring), JSON.stringify(before.querystring));
    assert.equal(out.headers['user-agent'].value, 'x');
    assert.equal(out.headers.host.value, before.headers.host.value);
    assert.equal(out.headers.accept.value, 'image/avif');
});

test('joins repeated Accept headers the way Node does before negotiating', () => {
    const { handler } = load(['image/avif', 'image/webp']);
    const event = viewerRequest(null);
    event.request.headers.accept = {
        value: 'text/html',
        multiValue: [{ value: 'text/html' }, { value: 'image/webp' }],
    };
    assert.equal(handler(event).headers.accept.value, 'image/webp');
});

test('the output is stable: feeding it back in gives itself', () => {
    for (const formats of [['image/webp'], ['image/avif', 'image/webp'], ['image/avif']]) {
        const { handler } = load(formats);
        for (const { accept } of cases) {
            const once = handler(viewerRequest(accept)).headers.accept.value;
            const twice = handler(viewerRequest(once)).headers.accept.value;
            assert.equal(twice, once, `formats=${formats} accept=${accept}`);
        }
    }
});
