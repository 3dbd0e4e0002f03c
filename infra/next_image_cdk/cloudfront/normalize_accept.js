// CloudFront Function (cloudfront-js-2.0, viewer request) for the /_next/image behaviour.
//
// The optimizer's output format depends on Accept only through one value: the type Next's
// getSupportedMimeType picks for the configured images.formats. This function computes that
// value at the edge and replaces Accept with it ("*/*" when no format is acceptable), so the
// cache keys on at most a handful of values instead of every browser's header, and the origin
// still negotiates exactly what it would have for the raw header.
//
// Rules (Next 16 = @hapi/accept mediaType + a raw substring test; contract section 7.1):
// spaces and tabs are dropped outside quoted parameter values; entries whose type does not look
// like a media range are skipped; a parameter that is not k=v with a non-empty v makes the header
// malformed; q is parseFloat'ed and out-of-range values count as 1; q=0 entries are dropped but
// still count as mentioned; entries sort by q desc, type then subtype alphabetically with "*"
// last, more parameters first, then position; wildcards expand to the formats not mentioned.
//
// A malformed header is left untouched, so the origin answers 400 for it as it would without
// CloudFront. FORMATS is filled in at synth time from the app's images config (concrete types
// only: image/avif and/or image/webp).
//
// ALSO_WEBP is turned on at synth time with animated WebP (NEXT_IMAGE_ANIMATED=webp) and both
// formats: the origin then also needs to know whether a browser that gets AVIF takes WebP too
// (what an animation becomes), so such a browser's Accept is forwarded as "image/avif,image/webp",
// which the origin negotiates to AVIF all the same.

var FORMATS = __NEXT_IMAGE_FORMATS__;
var ALSO_WEBP = false;
var ANY = '*/*';

// Deliberately the same loose pattern Next uses: the anchors bind only to the first and last
// alternatives, so for example "*/*x" or "a/b/c" still count as media ranges.
var MEDIA_RANGE = /^(?:\*\/\*)|(?:[\w!#$%&'*+\-.^`|~]+\/\*)|(?:[\w!#$%&'*+\-.^`|~]+\/[\w!#$%&'*+\-.^`|~]+)$/;

function MalformedAccept() {}

function squeeze(raw) {
    var quoted = {};
    var count = 0;
    var header = raw;
    if (raw.indexOf('"') !== -1) {
        header = raw.replace(/="([^"]*)"/g, function (match, inner) {
            count += 1;
            quoted['"' + count] = inner;
            return '="' + count;
        });
    }
    return { header: header.replace(/[ \t]/g, ''), quoted: quoted };
}

function parseEntry(part, position, quoted) {
    var pieces = part.split(';');
    var token = pieces[0].toLowerCase();
    if (!MEDIA_RANGE.test(token)) {
        return null;
    }
    var entry = { token: token, q: 1, position: position, params: {} };
    var inExtensions = false;
    for (var i = 1; i < pieces.length; i++) {
        var kv = pieces[i].split('=');
        if (kv.length !== 2 || !kv[1]) {
            throw new MalformedAccept();
        }
        var value = kv[1];
        if (kv[0] === 'q' || kv[0] === 'Q') {
            var q = parseFloat(value);
            entry.q = !isFinite(q) || q > 1 || (q < 0.001 && q !== 0) ? 1 : q;
            inExtensions = true;
        } else if (!inExtensions) {
            entry.params[kv[0]] = value.charAt(0) === '"' ? '"' + quoted[value] + '"' : value;
        }
    }
    var keys = Object.keys(entry.params);
    entry.suffix = keys.map(function (key) { return ';' + key + '=' + entry.params[key]; }).join('');
    entry.specificity = keys.length;
    var slash = token.split('/');
    entry.type = slash[0];
    entry.subtype = slash[1];
    return entry;
}

function wildcardLast(a, b) {
    if (a === '*') {
        return 1;
    }
    if (b === '*') {
        return -1;
    }
    return a < b ? -1 : 1;
}

function byPreference(a, b) {
    if (a.q !== b.q) {
        return b.q - a.q;
    }
    if (a.type !== b.type) {
        return wildcardLast(a.type, b.type);
    }
    if (a.subtype !== b.subtype) {
        return wildcardLast(a.subtype, b.subtype);
    }
    if (a.specificity !== b.specificity) {
        return b.specificity - a.specificity;
    }
    return a.position - b.position;
}

// The type Next would pick for this raw header, or '' for none; throws MalformedAccept.
function negotiate(raw, formats) {
    var squeezed = squeeze(raw || ANY);
    var parts = squeezed.header.split(',');
    var mentioned = Object.create(null);
    var accepted = [];
    for (var i = 0; i < parts.length; i++) {
        var entry = parts[i] ? parseEntry(parts[i], i, squeezed.quoted) : null;
        if (entry) {
            mentioned[entry.token] = entry;
            if (entry.q) {
                accepted.push(entry);
            }
        }
    }
    accepted.sort(byPreference);

    var byLower = Object.create(null);
    var byType = Object.create(null);
    for (var f = 0; f < formats.length; f++) {
        var lower = formats[f].toLowerCase();
        byLower[lower] = formats[f];
        var halves = lower.split('/');
        byType[halves[0]] = byType[halves[0]] || Object.create(null);
        byType[halves[0]][halves[1]] = formats[f];
    }

    var picked = '';
    for (var a = 0; a < accepted.length && !picked; a++) {
        var sel = accepted[a];
        var type = mentioned[sel.token].type;
        var subtype = mentioned[sel.token].subtype;
        if (!formats.length) {
            picked = sel.token + sel.suffix;
        } else if (type === '*') {
            picked = firstUnmentioned(Object.keys(byLower), byLower, '', mentioned);
        } else if (subtype !== '*') {
            var exact = byLower[sel.token];
            if (exact || (byType[type] && byType[type]['*'])) {
                picked = (exact || sel.token) + sel.suffix;
            }
        } else if (byType[type]) {
            picked = firstUnmentioned(Object.keys(byType[type]), byType[type], type + '/', mentioned);
        }
    }
    return raw.indexOf(picked) !== -1 ? picked : '';
}

function firstUnmentioned(keys, table, prefix, mentioned) {
    for (var k = 0; k < keys.length; k++) {
        if (!mentioned[prefix + keys[k]]) {
            return table[keys[k]];
        }
    }
    return '';
}

function rawAccept(headers) {
    var accept = headers.accept;
    if (!accept) {
        return '';
    }
    if (accept.multiValue && accept.multiValue.length > 1) {
        // Node joins repeated headers this way before Next reads them.
        return accept.multiValue.map(function (v) { return v.value; }).join(', ');
    }
    return accept.value;
}

function handler(event) {
    var request = event.request;
    var mime;
    var raw = rawAccept(request.headers);
    try {
        mime = negotiate(raw, FORMATS);
        if (ALSO_WEBP && mime.split(';')[0] === 'image/avif'
                && negotiate(raw, ['image/webp']).split(';')[0] === 'image/webp') {
            mime += ',image/webp';
        }
    } catch (e) {
        if (e instanceof MalformedAccept) {
            return request;
        }
        throw e;
    }
    request.headers.accept = { value: mime || ANY };
    return request;
}
