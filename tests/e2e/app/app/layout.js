export const metadata = {
  title: 'next-image e2e',
  description: 'A small Next.js app whose images go through the optimizer behind local-cdn',
};

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body style={{ margin: 0, fontFamily: 'system-ui, sans-serif', background: '#f4f1ea' }}>
        <nav style={{ padding: '12px 24px', display: 'flex', gap: 16 }}>
          <a href="/">Gallery</a>
          <a href="/remote">Remote</a>
        </nav>
        {children}
      </body>
    </html>
  );
}
