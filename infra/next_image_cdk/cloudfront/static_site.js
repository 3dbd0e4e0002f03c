// Viewer request of a static export's default behaviour (NextImageOptimizer static_site_dir):
// the path becomes the file `next build` wrote for it, in the site bucket.
// trailingSlash false: /about is about.html, and /about/ is redirected to /about (308).
// trailingSlash true: /about/ is about/index.html, and /about is redirected to /about/ (308).
// A path whose last segment has a dot is a file (/_next/static/..., /images/a.jpg, /about.txt)
// and is left as it is. The page of basePath itself is its index.html.
var TRAILING_SLASH = __NEXT_TRAILING_SLASH__;
var BASE_PATH = __NEXT_BASE_PATH__;

function redirect(location, querystring) {
  var query = [];
  for (var name in querystring) {
    var entry = querystring[name];
    var values = entry.multiValue ? entry.multiValue : [entry];
    for (var i = 0; i < values.length; i++) {
      query.push(values[i].value === '' ? name : name + '=' + values[i].value);
    }
  }
  return {
    statusCode: 308,
    statusDescription: 'Permanent Redirect',
    headers: { location: { value: location + (query.length ? '?' + query.join('&') : '') } },
  };
}

function handler(event) {
  var request = event.request;
  var uri = request.uri;
  if (uri === BASE_PATH || uri === BASE_PATH + '/') {
    request.uri = BASE_PATH + '/index.html';
    return request;
  }
  var last = uri.slice(uri.lastIndexOf('/') + 1);
  if (last.indexOf('.') !== -1) {
    return request;
  }
  if (TRAILING_SLASH) {
    if (last === '') {
      request.uri = uri + 'index.html';
      return request;
    }
    return redirect(uri + '/', request.querystring);
  }
  if (last === '') {
    return redirect(uri.replace(/\/+$/, ''), request.querystring);
  }
  request.uri = uri + '.html';
  return request;
}
