import Image from 'next/image';

export default function About() {
  return (
    <main style={{ maxWidth: 800, margin: '0 auto', padding: '0 24px 48px' }}>
      <h1>About</h1>
      {/* Reached by a client-side navigation too: the loader runs in the browser then. */}
      <Image src="/images/meadow.jpg" alt="Meadow" width={400} height={300} />
    </main>
  );
}
