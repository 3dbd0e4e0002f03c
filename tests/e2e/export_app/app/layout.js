export const metadata = {
  title: 'next-image static export',
  description: 'A static export whose images are made by the optimizer, or written by warm --out',
};

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body style={{ margin: 0, fontFamily: 'system-ui, sans-serif', background: '#eef2f4' }}>
        <nav style={{ padding: '12px 24px', display: 'flex', gap: 16 }}>
          <a href="/">Home</a>
          <a href="/about" id="about-link">About</a>
        </nav>
        {children}
      </body>
    </html>
  );
}
