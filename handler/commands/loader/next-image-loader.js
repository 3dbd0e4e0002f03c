// next-image-loader.js: next-image-lambda's loader for next/image, written by `next-image loader`.
// In next.config.js: images: { loader: 'custom', loaderFile: './next-image-loader.js' }.
//
// It builds the URLs Next.js 16.4.6's default loader builds (next/dist/shared/lib/image-loader.js):
// `${base}${basePath}/_next/image?url=${encodeURIComponent(src)}&w=${width}&q=${quality}`, the
// quality snapped to images.qualities and `&dpl=` added as Next adds it, so that an
// `output: 'export'` site, or an app on another host, has its images made by the optimizer.
// Read at build time (Next inlines NEXT_PUBLIC_* variables and its resolved images config):
//   NEXT_PUBLIC_IMAGE_BASE   the optimizer's origin (https://images.example.com); unset: the page's
//   NEXT_PUBLIC_IMAGE_FILES  webp or avif: link the files `next-image warm --out` wrote instead
// No dependencies. createLoader() and createFilesLoader() make loaders with other settings.

const FILES = process.env.NEXT_PUBLIC_IMAGE_FILES || '';
const opts = process.env.__NEXT_IMAGE_OPTS || {}; // a JSON string outside a Next build
const images = typeof opts === 'string' ? JSON.parse(opts) : opts;

function closestQuality(quality, qualities) {
  const q = quality || 75;
  if (!qualities || !qualities.length) return q;
  return qualities.reduce((a, b) => (Math.abs(b - q) < Math.abs(a - q) ? b : a), qualities[0]);
}

// images.path is `${basePath}/_next/image`, with a slash Next appends for a custom loader.
function route(base = '', path = '/_next/image') {
  return base.replace(/\/+$/, '') + path.replace(/\/+$/, '');
}

export function createLoader({ base, path, qualities, deploymentId, immutableAssets } = {}) {
  const target = route(base, path);
  return function nextImageLoader({ src, width, quality }) {
    let dpl = deploymentId || undefined;
    if (src.startsWith('/') && !src.startsWith('//')) {
      const at = src.indexOf('?');
      if (src.includes('/_next/static/immutable') && (immutableAssets || !dpl)) {
        dpl = undefined;
      } else if (at !== -1) {
        const params = new URLSearchParams(src.slice(at + 1));
        if (params.get('dpl')) {
          dpl = params.get('dpl');
          params.delete('dpl');
          const rest = params.toString();
          src = src.slice(0, at) + (rest ? '?' + rest : '');
        }
      }
    }
    const q = closestQuality(quality, qualities);
    const tail = src.startsWith('/') && dpl ? `&dpl=${dpl}` : '';
    return `${target}?url=${encodeURIComponent(src)}&w=${width}&q=${q}${tail}`;
  };
}

// The files of `next-image warm --out`: /_next/image-files/images/a.jpg.w640q75.webp. A static
// host cannot negotiate Accept, so one format. An absolute or query-string src is left as it is.
export function createFilesLoader({ base, path, qualities, format = 'webp' } = {}) {
  const target = route(base, path) + '-files';
  return function nextImageFilesLoader({ src, width, quality }) {
    if (!src.startsWith('/') || src.startsWith('//') || src.includes('?')) return src;
    const file = src.replace(/[\s,]/g, encodeURIComponent); // a srcset splits on them
    return `${target}${file}.w${width}q${closestQuality(quality, qualities)}.${format}`;
  };
}

const settings = {
  base: process.env.NEXT_PUBLIC_IMAGE_BASE || '',
  path: images.path,
  qualities: images.qualities,
  deploymentId: process.env.NEXT_DEPLOYMENT_ID,
  immutableAssets: process.env.NEXT_SUPPORTS_IMMUTABLE_ASSETS,
};

export default FILES ? createFilesLoader({ ...settings, format: FILES }) : createLoader(settings);
