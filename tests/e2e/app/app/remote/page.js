import { connection } from 'next/server';
import Image from 'next/image';

export default async function Remote() {
  // Rendered per request: the test's image server listens on a port chosen at run time.
  await connection();
  const origin = process.env.E2E_REMOTE_ORIGIN ?? 'http://127.0.0.1:9';
  return (
    <main style={{ maxWidth: 1200, margin: '0 auto', padding: '0 24px 48px' }}>
      <h1>Remote</h1>
      {/* An absolute URL, allowed by images.remotePatterns: the optimizer fetches it itself. */}
      <Image
        src={`${origin}/remote/mountain.jpg`}
        alt="Mountain, a remote image"
        width={600}
        height={400}
        priority
      />
    </main>
  );
}
