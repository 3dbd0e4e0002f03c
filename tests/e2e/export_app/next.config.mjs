// The static export of tests/e2e/test_static_export.py: `output: 'export'` writes every page to
// out/, with no server. Its images use the loader `next-image loader --out next-image-loader.js`
// writes (git-ignored: the test writes it before `next build`, as an adopter would): URLs of the
// optimizer behind the same distribution, or, built with the module `next-image warm --out`
// writes, the files it made. The optimizer reads this config from .next/required-server-files.json.
/** @type {import('next').NextConfig} */
const nextConfig = {
  output: 'export',
  images: {
    loader: 'custom',
    loaderFile: './next-image-loader.js',
    formats: ['image/avif', 'image/webp'],
    qualities: [60, 75],
  },
};

export default nextConfig;
