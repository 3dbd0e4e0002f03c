// The app OpenNext builds for bench/opennext.py: only its images config matters, the same
// formats as the Lambda benchmark's (AVIF first, then WebP).
/** @type {import('next').NextConfig} */
const nextConfig = {
  images: { formats: ['image/avif', 'image/webp'] },
};

export default nextConfig;
