import Image from 'next/image';

// Drawn by the test before `next build` (git-ignored), like every image of this app.
import photo from './photo.jpg';

export default function Home() {
  return (
    <main style={{ maxWidth: 1200, margin: '0 auto', padding: '0 24px 48px' }}>
      <h1>Static export</h1>
      {/* A static import (out/_next/static/media/photo.<hash>.jpg), above the fold: preloaded. */}
      <Image
        src={photo}
        alt="Hero photo, statically imported"
        priority
        sizes="(max-width: 1200px) 100vw, 1200px"
        style={{ width: '100%', height: 'auto', display: 'block' }}
      />
      <h2>From public/</h2>
      <div style={{ display: 'flex', gap: 24, alignItems: 'center', flexWrap: 'wrap' }}>
        {/* A fixed size: a 1x and a 2x candidate. quality 90 is snapped to images.qualities. */}
        <Image
          src="/images/street.jpg"
          alt="Street, a public JPEG"
          width={480}
          height={320}
          quality={90}
          style={{ maxWidth: '100%', height: 'auto' }}
        />
        <Image src="/images/logo.png" alt="Logo, a PNG with alpha" width={128} height={128} />
      </div>
      <h2>Cards</h2>
      <div style={{ display: 'grid', gridTemplateColumns: 'repeat(2, 1fr)', gap: 16 }}>
        {['harbour', 'meadow'].map((name) => (
          <div key={name} style={{ position: 'relative', aspectRatio: '4 / 3' }}>
            <Image
              src={`/images/${name}.jpg`}
              alt={`Card: ${name}`}
              fill
              quality={60}
              sizes="(max-width: 700px) 100vw, 50vw"
              style={{ objectFit: 'cover', borderRadius: 8 }}
            />
          </div>
        ))}
      </div>
    </main>
  );
}
