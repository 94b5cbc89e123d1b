// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "flame.h"
#include "hash.h"
#include "htab.h"
#include "json.h"
#include "report.h"
#include "snapshot.h"

/*
 * The call tree of the kept traces: the root, then one node per distinct
 * frame under its caller (frames are interned in the snapshot, so a
 * frame's identity is its pointers and line). Children are chained; the
 * writers sort them by bytes.
 */
struct node {
	const struct pytm_frame_info *f;	/* NULL: the root */
	uint32_t parent, first, next;		/* child, sibling: index, 0 for none */
	uint32_t depth;
	uint64_t bytes, blocks;			/* its subtree's */
	uint64_t self_bytes, self_blocks;	/* tracebacks that end here */
};

struct tree {
	struct node *v;
	size_t n, cap;
	uint32_t depth;				/* the deepest node's */
	struct htab h;				/* (parent, frame) -> index + 1 */
};

static uint64_t frame_hash(uint32_t parent, const struct pytm_frame_info *f)
{
	uint64_t h = hash__mix64(parent ^ (uint64_t)f->lineno << 32);

	h = hash__mix64(h ^ (uintptr_t)f->filename);
	return hash__mix64(h ^ (uintptr_t)f->name);
}

static bool same_frame(const struct pytm_frame_info *a, const struct pytm_frame_info *b)
{
	return a->filename == b->filename && a->lineno == b->lineno && a->name == b->name;
}

/* The child of PARENT for frame F, made if new: its index, or 0 out of memory. */
static uint32_t child(struct tree *t, uint32_t parent, const struct pytm_frame_info *f)
{
	uint64_t h = frame_hash(parent, f), v;
	size_t cur = 0;
	struct node *n;

	while ((v = htab__next(&t->h, h, &cur)))
		if (t->v[v - 1].parent == parent && same_frame(t->v[v - 1].f, f))
			return v - 1;
	if (t->n == t->cap) {
		size_t cap = t->cap * 2;
		struct node *nv = realloc(t->v, cap * sizeof(*nv));

		if (!nv)
			return 0;
		t->v = nv;
		t->cap = cap;
	}
	n = &t->v[t->n];
	memset(n, 0, sizeof(*n));
	n->f = f;
	n->parent = parent;
	n->depth = t->v[parent].depth + 1;
	n->next = t->v[parent].first;
	t->v[parent].first = t->n;
	if (htab__add(&t->h, h, t->n + 1))
		return 0;
	return t->n++;
}

static void tree__free(struct tree *t)
{
	free(t->v);
	htab__free(&t->h);
	memset(t, 0, sizeof(*t));
}

static int tree__build(struct tree *t, const struct snapshot *s, const struct report_opts *o)
{
	const struct pytm_trace *tr = snapshot__traces(s);
	size_t i, n = snapshot__count(s);
	bool *keep = NULL;
	uint32_t at;
	int f, err;

	memset(t, 0, sizeof(*t));
	t->cap = 1024;
	t->v = calloc(t->cap, sizeof(*t->v));
	keep = calloc(n ? n : 1, sizeof(*keep));
	err = !t->v || !keep ? -ENOMEM : htab__init(&t->h, 1024);
	if (!err)
		err = report__filter_mask(s, o, keep);
	if (err)
		goto out;
	t->n = 1;	/* the root */
	for (i = 0; i < n; i++) {
		if (!keep[i])
			continue;
		t->v[0].bytes += tr[i].size;
		t->v[0].blocks += tr[i].count;
		/* Oldest frame first: frames[] is most recent first. */
		for (at = 0, f = (int)tr[i].tb->nframe - 1; f >= 0; f--) {
			at = child(t, at, &tr[i].tb->frames[f]);
			if (!at) {
				err = -ENOMEM;
				goto out;
			}
			t->v[at].bytes += tr[i].size;
			t->v[at].blocks += tr[i].count;
			if (t->v[at].depth > t->depth)
				t->depth = t->v[at].depth;
		}
		t->v[at].self_bytes += tr[i].size;
		t->v[at].self_blocks += tr[i].count;
	}
out:
	free(keep);
	if (err)
		tree__free(t);
	return err;
}

/* N's children, biggest first (ties by order of creation): a malloc'd array. */
static uint32_t *sorted_children(const struct tree *t, uint32_t n, size_t *count)
{
	uint32_t c, *v;
	size_t k = 0, i, j;

	for (c = t->v[n].first; c; c = t->v[c].next)
		k++;
	v = malloc((k ? k : 1) * sizeof(*v));
	if (!v)
		return NULL;
	for (c = t->v[n].first, i = k; c; c = t->v[c].next)
		v[--i] = c;
	/* insertion sort, stable: few children per node */
	for (i = 1; i < k; i++) {
		uint32_t x = v[i];

		for (j = i; j > 0 && t->v[v[j - 1]].bytes < t->v[x].bytes; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
	*count = k;
	return v;
}

/* ---------------- folded stacks ---------------- */

static void put_frame(FILE *out, const struct pytm_frame_info *f)
{
	/* ';' separates frames and the last ' ' the weight: no ';' in a frame. */
	if (f->name) {
		report__put_escaped(out, f->name, ";");
		fputs(" (", out);
	}
	report__put_escaped(out, f->filename, ";");
	fprintf(out, ":%u", f->lineno);
	if (f->name)
		fputc(')', out);
}

static int folded(FILE *out, const struct tree *t, uint32_t n, const struct pytm_frame_info **path,
		  const char *root)
{
	uint32_t *kids;
	size_t k, i, d;
	int err = 0;

	if (n)
		path[t->v[n].depth - 1] = t->v[n].f;
	if (n && t->v[n].self_bytes) {
		if (root) {
			report__put_escaped(out, root, ";");
			fputc(';', out);
		}
		for (d = 0; d < t->v[n].depth; d++) {
			if (d)
				fputc(';', out);
			put_frame(out, path[d]);
		}
		fprintf(out, " %llu\n", (unsigned long long)t->v[n].self_bytes);
	}
	kids = sorted_children(t, n, &k);
	if (!kids)
		return -ENOMEM;
	for (i = 0; i < k && !err; i++)
		err = folded(out, t, kids[i], path, root);
	free(kids);
	return err;
}

int flame__write_folded(FILE *out, const struct snapshot *s, const struct report_opts *o,
			const char *root)
{
	const struct pytm_frame_info **path;
	struct tree t;
	int err;

	err = tree__build(&t, s, o);
	if (err)
		return err;
	path = calloc(t.depth + 1, sizeof(*path));
	err = path ? folded(out, &t, 0, path, root) : -ENOMEM;
	free(path);
	tree__free(&t);
	return err ?: ferror(out) ? -EIO : 0;
}

/* ---------------- HTML ---------------- */

/*
 * The page's data: the frames (name or null, file, line), and the nodes in
 * preorder as [frame, depth, bytes, blocks] (the root: frame -1): flat, so
 * that depth costs no nesting.
 */
struct frames {
	struct htab h;			/* frame -> index + 1 */
	const struct pytm_frame_info **v;
	size_t n, cap;
};

static int64_t frame_index(struct frames *fs, const struct pytm_frame_info *f)
{
	uint64_t h = frame_hash(0, f), v;
	size_t cur = 0;

	while ((v = htab__next(&fs->h, h, &cur)))
		if (same_frame(fs->v[v - 1], f))
			return (int64_t)v - 1;
	if (fs->n == fs->cap) {
		size_t cap = fs->cap ? fs->cap * 2 : 256;
		const struct pytm_frame_info **nv = realloc(fs->v, cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		fs->v = nv;
		fs->cap = cap;
	}
	fs->v[fs->n] = f;
	if (htab__add(&fs->h, h, fs->n + 1))
		return -ENOMEM;
	return (int64_t)fs->n++;
}

static int nodes_json(struct json *j, const struct tree *t, uint32_t n, struct frames *fs)
{
	int64_t f = n ? frame_index(fs, t->v[n].f) : -1;
	uint32_t *kids;
	size_t k, i;
	int err = 0;

	if (f < -1)
		return (int)f;
	json__begin_array(j);
	json__int(j, f);
	json__uint(j, t->v[n].depth);
	json__uint(j, t->v[n].bytes);
	json__uint(j, t->v[n].blocks);
	json__end_array(j);
	kids = sorted_children(t, n, &k);
	if (!kids)
		return -ENOMEM;
	for (i = 0; i < k && !err; i++)
		err = nodes_json(j, t, kids[i], fs);
	free(kids);
	return err;
}

/* The page around the data; FLAME_JS draws it (see the functions' comments). */
static const char page_head[] =
"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<meta name=\"generator\" content=\"pytm-bpf\">\n"
"<style>\n"
"body{font:13px/1.3 system-ui,sans-serif;margin:12px;color:#222}\n"
"h1{font-size:16px;margin:0 0 4px}#sub{color:#555;margin:0 0 8px}\n"
"#bar{display:flex;gap:8px;align-items:center;margin:0 0 6px}\n"
"#search{width:22em;padding:2px 4px}#matched{color:#a0a}\n"
"#details{min-height:1.3em;color:#333;margin:0 0 6px;white-space:pre}\n"
"#graph{position:relative;width:100%;overflow:hidden}\n"
".f{position:absolute;height:17px;box-sizing:border-box;border:1px solid #fff;"
"border-width:0 1px 1px 0;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;"
"font-size:11px;line-height:16px;padding:0;text-indent:3px;cursor:pointer;color:#000}\n"
".f.anc{opacity:.55}.f.match{background:#e040e0 !important}\n"
"</style>\n";

static const char page_body[] =
"</head><body>\n"
"<h1 id=\"title\"></h1><p id=\"sub\"></p>\n"
"<div id=\"bar\"><input id=\"search\" type=\"search\" placeholder=\"Search frames (regular expression)\">"
"<button id=\"reset\" type=\"button\">Reset zoom</button><span id=\"matched\"></span></div>\n"
"<div id=\"details\"></div>\n<div id=\"graph\"></div>\n";

static const char page_js[] =
"<script>\n"
"'use strict';\n"
"const D = JSON.parse(document.getElementById('data').textContent);\n"
"const ROW = 17, MIN = 0.0005;\n"
"const graph = document.getElementById('graph');\n"
"const nodes = [], stack = [];\n"
"let zoom = null, term = null;\n"
/* Preorder with depths back into a tree. */
"for (const [f, d, b, n] of D.nodes) {\n"
"  const node = {f: f, d: d, b: b, n: n, kids: [], up: d ? stack[d - 1] : null};\n"
"  if (node.up) node.up.kids.push(node);\n"
"  stack[d] = node;\n"
"  nodes.push(node);\n"
"}\n"
"const root = nodes[0];\n"
"function label(node) {\n"
"  if (node.f < 0) return 'all';\n"
"  const [name, file, line] = D.frames[node.f];\n"
"  return name === null ? file + ':' + line : name + ' (' + file + ':' + line + ')';\n"
"}\n"
"function size(b) {\n"
"  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];\n"
"  let i = 0;\n"
"  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }\n"
"  return (i ? b.toFixed(1) : b) + ' ' + u[i];\n"
"}\n"
"function share(b) { return root.b ? (100 * b / root.b).toFixed(2) + '%' : '0%'; }\n"
"function tip(node) {\n"
"  return label(node) + '\\n' + size(node.b) + ' (' + node.b + ' B, ' + share(node.b) +\n"
"    ' of ' + D.unit + '), ' + node.n + ' blocks';\n"
"}\n"
"function hue(node) {\n"
"  if (node.f < 0) return 'hsl(0,0%,80%)';\n"
"  let h = 0;\n"
"  for (const c of label(node)) h = (h * 31 + c.charCodeAt(0)) >>> 0;\n"
"  return 'hsl(' + (20 + h % 40) + ',' + (70 + h % 20) + '%,' + (60 + (h >> 8) % 15) + '%)';\n"
"}\n"
/* One div per frame wide enough to see; ancestors of the zoomed frame span the width. */
"function draw() {\n"
"  graph.textContent = '';\n"
"  let depth = 0;\n"
"  const put = (node, x, w, anc) => {\n"
"    const div = document.createElement('div');\n"
"    div.className = 'f' + (anc ? ' anc' : '') + (term && node.f >= 0 && term.test(label(node)) ? ' match' : '');\n"
"    div.style.left = (100 * x) + '%';\n"
"    div.style.width = (100 * w) + '%';\n"
"    div.style.top = (node.d * ROW) + 'px';\n"
"    div.style.background = hue(node);\n"
"    div.textContent = label(node);\n"
"    div.title = tip(node);\n"
"    div.dataset.bytes = node.b;\n"
"    div.dataset.blocks = node.n;\n"
"    div.dataset.depth = node.d;\n"
"    div.node = node;\n"
"    graph.appendChild(div);\n"
"    depth = Math.max(depth, node.d);\n"
"  };\n"
"  const walk = (node, x, w) => {\n"
"    put(node, x, w, false);\n"
"    let at = x;\n"
"    for (const k of node.kids) {\n"
"      const kw = node.b ? w * k.b / node.b : 0;\n"
"      if (kw >= MIN) walk(k, at, kw);\n"
"      at += kw;\n"
"    }\n"
"  };\n"
"  for (let a = zoom.up; a; a = a.up) put(a, 0, 1, true);\n"
"  walk(zoom, 0, 1);\n"
"  graph.style.height = ((depth + 1) * ROW) + 'px';\n"
"}\n"
"function setZoom(node) { zoom = node; draw(); }\n"
"function setSearch(s) {\n"
"  term = null;\n"
"  if (s) { try { term = new RegExp(s); } catch (e) { term = new RegExp(s.replace(/[.*+?^${}()|[\\]\\\\]/g, '\\\\$&')); } }\n"
"  draw();\n"
"  let b = 0;\n"
"  const count = (node) => {\n"
"    if (term && node.f >= 0 && term.test(label(node))) { b += node.b; return; }\n"
"    for (const k of node.kids) count(k);\n"
"  };\n"
"  count(root);\n"
"  document.getElementById('matched').textContent = term ? 'Matched: ' + size(b) + ' (' + share(b) + ')' : '';\n"
"}\n"
"graph.addEventListener('click', (e) => {\n"
"  const node = e.target.node;\n"
"  if (node) setZoom(node === zoom && node.up ? node.up : node);\n"
"});\n"
"graph.addEventListener('mouseover', (e) => {\n"
"  if (e.target.node) document.getElementById('details').textContent = tip(e.target.node);\n"
"});\n"
"document.getElementById('search').addEventListener('input', (e) => setSearch(e.target.value));\n"
"document.getElementById('reset').addEventListener('click', () => setZoom(root));\n"
"document.title = D.title;\n"
"document.getElementById('title').textContent = D.title;\n"
"document.getElementById('sub').textContent = size(root.b) + ' of ' + D.unit + ' in ' + root.n +\n"
"  ' blocks, by traceback (oldest frame on top); click a frame to zoom, click it again to zoom out.';\n"
"setZoom(root);\n"
"</script>\n</body></html>\n";

int flame__write_html(FILE *out, const struct snapshot *s, const struct report_opts *o,
		      const char *title)
{
	struct frames fs = { 0 };
	struct json j;
	struct tree t;
	size_t i;
	int err;

	err = tree__build(&t, s, o);
	if (err)
		return err;
	err = htab__init(&fs.h, 256);
	if (err)
		goto out;
	fputs(page_head, out);
	fputs("<title>pytm-bpf</title>\n", out);
	fputs(page_body, out);
	fputs("<script type=\"application/json\" id=\"data\">", out);
	json__init(&j, out);
	j.html = true;
	json__begin_object(&j);
	json__name(&j, "title");
	json__string(&j, title);
	json__name(&j, "unit");
	json__string(&j, "live memory");
	json__name(&j, "nodes");
	json__begin_array(&j);
	err = nodes_json(&j, &t, 0, &fs);
	json__end_array(&j);
	json__name(&j, "frames");
	json__begin_array(&j);
	for (i = 0; i < fs.n; i++) {
		json__begin_array(&j);
		json__string(&j, fs.v[i]->name);
		json__string(&j, fs.v[i]->filename);
		json__uint(&j, fs.v[i]->lineno);
		json__end_array(&j);
	}
	json__end_array(&j);
	json__end_object(&j);
	fputs("</script>\n", out);
	fputs(page_js, out);
out:
	free(fs.v);
	htab__free(&fs.h);
	tree__free(&t);
	return err ?: ferror(out) ? -EIO : 0;
}

/* ---------------- SVG ---------------- */

#define SVG_WIDTH	1200
#define SVG_ROW		17
#define SVG_TOP		30	/* the title's band */
#define SVG_CHAR	7	/* px per character of the 12px monospace labels */

/* Untrusted text in XML: escaped for a terminal first (\xNN), then for XML. */
static void svg_text(FILE *out, const char *s)
{
	char *buf = NULL, *p;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	if (!m)
		return;
	report__put_escaped(m, s, NULL);
	fclose(m);
	for (p = buf; p && *p; p++) {
		switch (*p) {
		case '&': fputs("&amp;", out); break;
		case '<': fputs("&lt;", out); break;
		case '>': fputs("&gt;", out); break;
		case '"': fputs("&quot;", out); break;
		default: fputc(*p, out);
		}
	}
	free(buf);
}

/* "function (file:line)", or "file:line", or "all": raw (svg_text escapes). */
static void svg_label(char *buf, size_t len, const struct pytm_frame_info *f)
{
	if (!f)
		snprintf(buf, len, "all");
	else if (f->name)
		snprintf(buf, len, "%s (%s:%u)", f->name, f->filename, f->lineno);
	else
		snprintf(buf, len, "%s:%u", f->filename, f->lineno);
}

/* A warm colour per label (the same frame, the same colour). */
static void svg_colour(char *buf, size_t len, const char *label)
{
	uint64_t h = hash__str(0x9e3779b97f4a7c15ULL, label);

	snprintf(buf, len, "rgb(%u,%u,%u)", 205 + (unsigned)(h % 50), 80 + (unsigned)((h >> 8) % 130),
		 (unsigned)((h >> 16) % 60));
}

static int svg_node(FILE *out, const struct tree *t, uint32_t n, double x, double scale)
{
	const struct node *v = &t->v[n];
	double w = v->bytes * scale, cx = x;
	char label[4096], colour[32], size[32];
	uint32_t *kids;
	size_t k, i;
	int err = 0;

	if (w < 0.1)
		return 0;
	svg_label(label, sizeof(label), v->f);
	svg_colour(colour, sizeof(colour), label);
	report__format_size(size, sizeof(size), (double)v->bytes, false);
	fputs("<g><title>", out);
	svg_text(out, label);
	fprintf(out, "\n%s (%llu B, %.2f%%) in %llu blocks</title>", size,
		(unsigned long long)v->bytes, t->v[0].bytes ? 100.0 * v->bytes / t->v[0].bytes : 0,
		(unsigned long long)v->blocks);
	fprintf(out, "<rect x=\"%.2f\" y=\"%u\" width=\"%.2f\" height=\"%u\" fill=\"%s\" rx=\"2\"/>",
		x, SVG_TOP + v->depth * SVG_ROW, w, SVG_ROW - 1, colour);
	if (w > 3 * SVG_CHAR) {
		size_t fit = (size_t)(w / SVG_CHAR) - 1;

		/* Cut to the box, whole characters (UTF-8), ".." at the end. */
		if (strlen(label) > fit) {
			size_t c = fit > 2 ? fit - 2 : 0;

			while (c && ((unsigned char)label[c] & 0xc0) == 0x80)
				c--;
			strcpy(label + c, "..");
		}
		fprintf(out, "<text x=\"%.2f\" y=\"%u\">", x + 3, SVG_TOP + v->depth * SVG_ROW + 12);
		svg_text(out, label);
		fputs("</text>", out);
	}
	fputs("</g>\n", out);
	kids = sorted_children(t, n, &k);
	if (!kids)
		return -ENOMEM;
	for (i = 0; i < k && !err; i++) {
		err = svg_node(out, t, kids[i], cx, scale);
		cx += t->v[kids[i]].bytes * scale;
	}
	free(kids);
	return err;
}

int flame__write_svg(FILE *out, const struct snapshot *s, const struct report_opts *o,
		     const char *title)
{
	char total[32];
	struct tree t;
	unsigned int height;
	int err;

	err = tree__build(&t, s, o);
	if (err)
		return err;
	height = SVG_TOP + (t.depth + 1) * SVG_ROW + 10;
	report__format_size(total, sizeof(total), (double)t.v[0].bytes, false);
	fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%u\" height=\"%u\" "
		"viewBox=\"0 0 %u %u\">\n"
		"<style>text { font: 12px monospace; fill: #000; pointer-events: none; } "
		"rect:hover { stroke: #000; stroke-width: 0.5; }</style>\n"
		"<rect width=\"100%%\" height=\"100%%\" fill=\"#fdfdf6\"/>\n"
		"<text x=\"%u\" y=\"20\" style=\"font-size: 15px\">",
		SVG_WIDTH, height, SVG_WIDTH, height, 4);
	svg_text(out, title);
	fprintf(out, " - %s</text>\n", total);
	if (t.v[0].bytes)
		err = svg_node(out, &t, 0, 0, (double)SVG_WIDTH / t.v[0].bytes);
	fputs("</svg>\n", out);
	tree__free(&t);
	return err ?: ferror(out) ? -EIO : 0;
}
