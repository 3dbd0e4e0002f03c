// The e2e test's app (tests/e2e/test_browser.py). Its `images` config is what the optimizer reads
// from `.next/required-server-files.json` when the stack is synthesized with -c nextDir=.next.
/** @type {import('next').NextConfig} */
const nextConfig = {
  images: {
    formats: ['image/avif', 'image/webp'],
    // /remote serves an image from a loopback server the test starts on a free port: any port.
    remotePatterns: [{ protocol: 'http', hostname: '127.0.0.1', pathname: '/remote/**' }],
    // Next's SSRF guard (and the optimizer's, which follows it) refuses loopback and private
    // addresses. The test's "remote" server is on 127.0.0.1, so this app allows them: never do
    // this in an app whose remotePatterns can reach anything you do not control.
    dangerouslyAllowLocalIP: true,
  },
  experimental: {
    // /images/huge.png is 3840 x 3600 of noise, so that its AVIF is over Lambda's 4.4 MB inline
    // limit. Encoding it at 3840 takes ~6.5 s alone on a 2-core machine and ~10 s while the
    // browser loads the rest, past sharp's default 7 s timeout (past it, Next and the optimizer
    // serve the original bytes): this allows 20 s, the function's whole request budget.
    imgOptTimeoutInSeconds: 20,
  },
};

export default nextConfig;
