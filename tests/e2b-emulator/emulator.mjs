// E2B emulator: the control-plane REST API and envd (process + filesystem
// Connect-RPC services, /files, /health) on one loopback port, with
// sandboxes run as local processes under a per-sandbox temp directory and
// switchable fault injection. Node standard library only, so it runs without
// an install. It must never listen on anything but loopback, never let a
// files-API path escape its sandbox root, and bound everything a client can
// make it hold (bodies, sandboxes, processes, buffered output).
//
// Spec: /work/shared/reference/e2b-and-docker-api.md §1-4, §7, checked
// against the e2b JS SDK pinned in package.json (see docs/e2b-emulator.md).

import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawn, spawnSync } from 'node:child_process';

const ENVD_VERSION = '0.6.13';
const ENVD_PORT = 49983;
const CLIENT_ID = '6532622b';
const SANDBOX_ID_RE = /^[a-z0-9]{20}$/;

const LIMITS = {
	jsonBody: 1 << 20,		// control-plane and RPC request bodies
	upload: 64 << 20,		// one POST /files body
	sandboxesHard: 200,		// whatever --max-sandboxes says
	processesPerSandbox: 64,
	streamBacklog: 8 << 20,		// unsent bytes per stream before we cut it
	dataChunk: 32 << 10,		// max bytes of output per data event
	metadataKeys: 64,
	metadataLen: 1024,
	requestLog: 1000,
	listPage: 100,
	faults: 256,
};

// ---------------------------------------------------------------- options

function parseArgs(argv) {
	const o = {
		host: '127.0.0.1', port: 0, apiKey: null, maxSandboxes: 20,
		maxLifetimeSec: 3600, templates: null, domain: null,
		keepaliveSec: 90, createRate: 0, faults: [], quiet: false, isolation: 'auto',
	};
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const v = () => {
			if (i + 1 >= argv.length)
				die(`missing value for ${a}`);
			return argv[++i];
		};
		switch (a) {
		case '--port': o.port = intArg(a, v(), 0, 65535); break;
		case '--host': o.host = v(); break;
		case '--api-key': o.apiKey = v(); break;
		case '--max-sandboxes': o.maxSandboxes = intArg(a, v(), 1, LIMITS.sandboxesHard); break;
		case '--max-lifetime': o.maxLifetimeSec = intArg(a, v(), 1, 7 * 86400); break;
		case '--templates': o.templates = v().split(',').filter(Boolean); break;
		case '--domain': o.domain = v(); break;
		case '--keepalive': o.keepaliveSec = intArg(a, v(), 1, 3600); break;
		case '--create-rate': o.createRate = intArg(a, v(), 0, 100000); break;
		case '--isolation':
			o.isolation = v();
			if (!['auto', 'mountns', 'none'].includes(o.isolation))
				die('--isolation: auto, mountns or none');
			break;
		case '--fault': o.faults.push(JSON.parse(v())); break;
		case '--quiet': o.quiet = true; break;
		case '-h': case '--help':
			process.stdout.write(USAGE);
			process.exit(0);
		default: die(`unknown option ${a}\n${USAGE}`);
		}
	}
	if (!['127.0.0.1', '::1', 'localhost'].includes(o.host) && !/^127\./.test(o.host))
		die(`refusing to listen on non-loopback host ${o.host}`);
	return o;
}

const USAGE = `usage: run --port N [--api-key KEY] [--max-sandboxes N] [--max-lifetime SEC]
           [--templates a,b] [--domain D] [--keepalive SEC] [--create-rate N/s]
           [--isolation auto|mountns|none]
           [--fault JSON]... [--quiet]
`;

function intArg(name, s, lo, hi) {
	const n = Number(s);
	if (!Number.isInteger(n) || n < lo || n > hi)
		die(`${name}: want an integer in ${lo}..${hi}, got ${s}`);
	return n;
}

function die(msg) {
	process.stderr.write(`e2b-emulator: ${msg}\n`);
	process.exit(2);
}

// ---------------------------------------------------------------- errors

class HttpError extends Error {
	constructor(status, message, extra) {
		super(message);
		this.status = status;
		this.extra = extra;
	}
}

// Connect error codes and the HTTP status connect-go gives each.
const CONNECT_STATUS = {
	canceled: 499, unknown: 500, invalid_argument: 400, deadline_exceeded: 504,
	not_found: 404, already_exists: 409, permission_denied: 403,
	resource_exhausted: 429, failed_precondition: 400, aborted: 409,
	out_of_range: 400, unimplemented: 501, internal: 500, unavailable: 503,
	data_loss: 500, unauthenticated: 401,
};

class RpcError extends Error {
	constructor(code, message) {
		super(message);
		this.code = code;
	}
}

// ---------------------------------------------------------------- state

const opts = parseArgs(process.argv.slice(2));
const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2b-emulator-'));
let server = null;

// Installed first, so a SIGTERM during start-up also cleans up.
function shutdown() {
	for (const sb of [...sandboxes.values()])
		killSandbox(sb);
	if (server) {
		server.close();
		server.closeAllConnections();
	}
	try {
		fs.rmSync(baseDir, { recursive: true, force: true });
	} catch { /* best effort */ }
	process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

// With a private mount namespace per process, the sandbox root's home,
// root and tmp are bound over /home, /root and /tmp, so a command sees the
// same absolute paths as the files API (/home/user/x). It needs
// CAP_SYS_ADMIN (root); without it ("none") commands see the host's paths
// and only cwd and HOME point into the sandbox root.
function probeMountNs() {
	const probe = path.join(baseDir, '.probe');
	fs.mkdirSync(probe, { recursive: true });
	const r = spawnSync('unshare', ['-m', '--propagation', 'private', '/bin/sh', '-c',
		'mount --bind "$0" /tmp && test -d /tmp', probe], { timeout: 5000, stdio: 'ignore' });
	fs.rmSync(probe, { recursive: true, force: true });
	return r.status === 0;
}
const MOUNT_NS_SCRIPT = 'mount --bind "$E2B_EMULATOR_ROOT/home" /home && ' +
	'mount --bind "$E2B_EMULATOR_ROOT/root" /root && mount --bind "$E2B_EMULATOR_ROOT/tmp" /tmp && ' +
	'cd "$E2B_EMULATOR_CWD" && unset E2B_EMULATOR_CWD && exec "$@"';
if (opts.isolation !== 'none') {
	const ok = probeMountNs();
	if (!ok && opts.isolation === 'mountns')
		die('--isolation mountns: cannot make a private mount namespace (needs root and unshare)');
	opts.isolation = ok ? 'mountns' : 'none';
}
const sandboxes = new Map();	// sandboxID -> sandbox
let faults = [];
let faultSeq = 0;
const requestLog = [];
const counters = { created: 0, killed: 0, expired: 0, faultsFired: 0 };

function nowIso(ms) {
	return new Date(ms).toISOString();
}

function newSandboxId() {
	const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
	for (;;) {
		const b = crypto.randomBytes(20);
		let id = '';
		for (const x of b)
			id += alphabet[x % alphabet.length];
		if (!sandboxes.has(id))
			return id;
	}
}

// ---------------------------------------------------------------- faults
//
// A fault is {kind, op?, sandboxID?, count?, ...}. "op" names the operation
// it applies to ("create", "list", "get", "kill", "timeout", "refresh",
// "pause", "connect", "resume", "metrics", "logs" on the control plane;
// "envd" for any envd call, or "envd:<path>" such as
// "envd:/process.Process/Start" or "envd:/files"; "*" for all). count is
// how many requests it fires on (default 1, -1 = until cleared).

const FAULT_KINDS = new Set([
	'rate_limit',		// 429 "Rate limit exceeded" + Retry-After (control plane)
	'concurrency',		// 429 concurrency message (create/resume/connect)
	'http_error',		// status N with the Error body (control plane or envd)
	'delay',		// ms of latency before handling (then continues)
	'sandbox_not_found',	// envd: proxy 502 "The sandbox was not found"
	'rpc_error',		// envd RPC: Connect error {code, message}
	'cut_stream',		// stream: close the TCP connection without EOS
	'deadline_exceeded',	// stream: kill process, EOS deadline_exceeded
	'garbage_stream',	// stream: variant bad_json|huge_frame|truncated|bad_flags
	'drop_connection',	// any: destroy the socket without a response
	'lose_response',	// any: do the operation, then lose its response (close or reset)
]);

function addFault(f) {
	if (!f || typeof f !== 'object' || !FAULT_KINDS.has(f.kind))
		throw new HttpError(400, `unknown fault kind ${f && f.kind}; one of ${[...FAULT_KINDS].join(', ')}`);
	if (faults.length >= LIMITS.faults)
		throw new HttpError(400, 'too many faults queued');
	const fault = {
		id: ++faultSeq, kind: f.kind, op: f.op ?? '*', sandboxID: f.sandboxID ?? null,
		count: Number.isInteger(f.count) ? f.count : 1, fired: 0,
		status: f.status, message: f.message, code: f.code, retryAfter: f.retryAfter,
		ms: f.ms, afterEvents: f.afterEvents, mode: f.mode, variant: f.variant, errorCode: f.errorCode,
	};
	if (fault.kind === 'lose_response' && fault.mode !== undefined && fault.mode !== 'close' && fault.mode !== 'reset')
		throw new HttpError(400, 'lose_response: mode is "close" or "reset"');
	faults.push(fault);
	return fault;
}

function opMatches(want, op) {
	if (want === '*' || want === op)
		return true;
	if (want === 'envd' && op.startsWith('envd:'))
		return true;
	return false;
}

// Take the first matching armed fault of one of the given kinds.
function takeFault(kinds, op, sandboxID) {
	for (const f of faults) {
		if (!kinds.includes(f.kind) || !opMatches(f.op, op))
			continue;
		if (f.sandboxID && f.sandboxID !== sandboxID)
			continue;
		if (f.count === 0)
			continue;
		if (f.count > 0)
			f.count--;
		f.fired++;
		counters.faultsFired++;
		faults = faults.filter((x) => x.count !== 0);
		return f;
	}
	return null;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// lose_response: the request is handled in full (a create makes its
// sandbox, a kill kills, an upload writes), and the response dies before
// its first byte reaches the client, as when a gateway or the network
// drops it on the way back. "close" (the default) ends the connection with
// a FIN, "reset" with an RST. A stream loses its headers the same way; the
// process it started keeps running.
function loseResponse(req, res, mode) {
	let gone = false;
	const lose = () => {
		if (gone)
			return;
		gone = true;
		const sock = req.socket;
		if (mode === 'reset' && typeof sock.resetAndDestroy === 'function')
			sock.resetAndDestroy();
		else
			sock.destroy();
	};
	res.setHeader = function () { return this; };
	res.writeHead = function () { return this; };
	res.flushHeaders = lose;
	res.write = () => { lose(); return true; };
	res.end = function () { lose(); return this; };
}

// ---------------------------------------------------------------- helpers

function readBody(req, limit) {
	return new Promise((resolve, reject) => {
		const declared = Number(req.headers['content-length']);
		if (declared > limit) {
			reject(new HttpError(413, `request body larger than ${limit} bytes`));
			req.resume();
			return;
		}
		const chunks = [];
		let n = 0;
		let failed = false;
		req.on('data', (c) => {
			if (failed)
				return;
			n += c.length;
			if (n > limit) {
				failed = true;
				reject(new HttpError(413, `request body larger than ${limit} bytes`));
				return;
			}
			chunks.push(c);
		});
		req.on('end', () => failed || resolve(Buffer.concat(chunks)));
		req.on('error', (e) => failed || reject(e));
	});
}

async function readJson(req, { optional = false } = {}) {
	const buf = await readBody(req, LIMITS.jsonBody);
	if (buf.length === 0) {
		if (optional)
			return {};
		throw new HttpError(400, 'Error when parsing request: request body has an error: value is required but missing');
	}
	let v;
	try {
		v = JSON.parse(buf.toString('utf8'));
	} catch (e) {
		throw new HttpError(400, `Error when parsing request: ${e.message}`);
	}
	if (v === null || typeof v !== 'object' || Array.isArray(v))
		throw new HttpError(400, 'Error when parsing request: body must be a JSON object');
	return v;
}

function sendJson(res, status, body, headers = {}) {
	const s = JSON.stringify(body);
	res.writeHead(status, {
		'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s), ...headers,
	});
	res.end(s);
}

function sendEmpty(res, status, headers = {}) {
	res.writeHead(status, headers);
	res.end();
}

function apiError(res, status, message, headers = {}, extra = {}) {
	sendJson(res, status, { code: status, message, ...extra }, headers);
}

function isStringMap(v) {
	return v && typeof v === 'object' && !Array.isArray(v) &&
		Object.values(v).every((x) => typeof x === 'string');
}

// ---------------------------------------------------------------- sandboxes

async function createSandbox(body, { v2 }) {
	if (typeof body.templateID !== 'string' || body.templateID === '')
		throw new HttpError(400, 'Error when parsing request: property "templateID" is missing');
	const template = body.templateID;
	if (opts.templates && !opts.templates.includes(template.split(':')[0]))
		throw new HttpError(404, `template '${template}' not found`);
	let timeout = body.timeout;
	if (timeout === undefined || timeout === null)
		timeout = v2 ? 300 : 15;
	if (!Number.isInteger(timeout))
		throw new HttpError(400, 'Error when parsing request: property "timeout" must be an integer');
	if (timeout <= 0)
		throw new HttpError(400, 'Timeout must be greater than 0');
	if (timeout > opts.maxLifetimeSec)
		throw new HttpError(400, `Timeout cannot be greater than ${Math.floor(opts.maxLifetimeSec / 3600)} hours`);
	for (const k of ['metadata', 'envVars']) {
		const m = body[k];
		if (m === undefined || m === null)
			continue;
		if (!isStringMap(m))
			throw new HttpError(400, `Error when parsing request: property "${k}" must be a string map`);
		if (Object.keys(m).length > LIMITS.metadataKeys)
			throw new HttpError(400, `${k}: too many keys`);
		for (const [a, b] of Object.entries(m))
			if (a.length > LIMITS.metadataLen || b.length > LIMITS.metadataLen)
				throw new HttpError(400, `${k}: key or value too long`);
	}
	const secure = v2 ? true : body.secure === true;
	const net = body.network;
	if (net && net.allowPublicTraffic === false && !secure)
		throw new HttpError(400, 'You cannot create a sandbox without public access unless you enable secure envd access via \'secure\' flag.');
	if (body.autoPauseMemory !== undefined && body.autoPause !== true)
		throw new HttpError(400, 'autoPauseMemory can only be set when autoPause is true');

	const running = [...sandboxes.values()].filter((s) => s.state === 'running').length;
	if (running >= opts.maxSandboxes)
		throw concurrencyError();
	if (sandboxes.size >= LIMITS.sandboxesHard)
		throw concurrencyError();

	const id = newSandboxId();
	const root = path.join(baseDir, id);
	for (const d of ['home/user', 'root', 'tmp'])
		fs.mkdirSync(path.join(root, d), { recursive: true });
	const now = Date.now();
	const sb = {
		id, templateID: template, alias: template === 'base' ? 'base' : undefined,
		metadata: body.metadata ?? {}, envVars: body.envVars ?? {}, secure,
		accessToken: secure ? crypto.randomBytes(16).toString('hex') : undefined,
		trafficAccessToken: net && net.allowPublicTraffic === false ? crypto.randomBytes(16).toString('hex') : null,
		startedAt: now, endAt: now + timeout * 1000, state: 'running',
		autoPause: body.autoPause === true, allowInternetAccess: body.allow_internet_access ?? null,
		network: net ?? undefined, root, processes: new Map(), timer: null,
		fileMeta: new Map(),
	};
	sandboxes.set(id, sb);
	armExpiry(sb);
	counters.created++;
	return sb;
}

function concurrencyError() {
	return new HttpError(429, `you have reached the maximum number of concurrent E2B sandboxes (${opts.maxSandboxes}). If you need more, please contact us at 'https://e2b.dev/docs/getting-help'`);
}

function armExpiry(sb) {
	clearTimeout(sb.timer);
	sb.timer = null;
	if (sb.state !== 'running')
		return;
	const ms = Math.max(0, sb.endAt - Date.now());
	// setTimeout takes at most 2^31-1 ms; lifetimes are capped well below.
	sb.timer = setTimeout(() => expire(sb), ms);
	sb.timer.unref();
}

function expire(sb) {
	if (!sandboxes.has(sb.id))
		return;
	counters.expired++;
	if (sb.autoPause)
		pauseSandbox(sb);
	else
		killSandbox(sb);
}

// A sandbox that is killed or paused takes its VM, envd and every open
// connection with it: streams are cut with no end event (the SDK then
// probes /health and reports the sandbox gone), and only then do the
// processes die.
function killProcesses(sb) {
	for (const p of sb.processes.values()) {
		for (const st of [...p.subscribers])
			st.sever();
		p.kill('SIGKILL');
	}
}

function killSandbox(sb) {
	clearTimeout(sb.timer);
	killProcesses(sb);
	sandboxes.delete(sb.id);
	counters.killed++;
	fs.rm(sb.root, { recursive: true, force: true }, () => {});
}

function pauseSandbox(sb) {
	clearTimeout(sb.timer);
	killProcesses(sb);
	sb.state = 'paused';
	sb.endAt = Date.now();	// listed paused sandboxes carry the snapshot time
}

function resumeSandbox(sb, timeout) {
	sb.state = 'running';
	sb.startedAt = Date.now();
	sb.endAt = sb.startedAt + timeout * 1000;
	armExpiry(sb);
}

function capEnd(sb, end) {
	return Math.min(end, sb.startedAt + opts.maxLifetimeSec * 1000);
}

function sandboxResponse(sb) {
	return {
		templateID: sb.templateID, sandboxID: sb.id, clientID: CLIENT_ID,
		envdVersion: ENVD_VERSION, ...(sb.alias && { alias: sb.alias }),
		...(sb.secure && { envdAccessToken: sb.accessToken }),
		trafficAccessToken: sb.trafficAccessToken, domain: opts.domain,
	};
}

function listedSandbox(sb) {
	return {
		templateID: sb.templateID, ...(sb.alias && { alias: sb.alias }), sandboxID: sb.id,
		clientID: CLIENT_ID, startedAt: nowIso(sb.startedAt), endAt: nowIso(sb.endAt),
		cpuCount: 2, memoryMB: 512, diskSizeMB: 1024, metadata: sb.metadata,
		state: sb.state, envdVersion: ENVD_VERSION, volumeMounts: [],
	};
}

function sandboxDetail(sb) {
	return {
		...listedSandbox(sb),
		...(sb.secure && { envdAccessToken: sb.accessToken }),
		domain: opts.domain, allowInternetAccess: sb.allowInternetAccess,
		...(sb.network && { network: sb.network }),
		lifecycle: { autoResume: false, onTimeout: sb.autoPause ? 'pause' : 'kill' },
	};
}

// Sandbox IDs: 20 chars of [a-z0-9]; the legacy "<id>-<clientID>" is split.
function parseSandboxId(raw) {
	let dec;
	try {
		dec = decodeURIComponent(raw);
	} catch {
		throw new HttpError(400, 'Invalid sandbox ID');
	}
	const id = dec.split('-')[0];
	if (!SANDBOX_ID_RE.test(id))
		throw new HttpError(400, 'Invalid sandbox ID');
	return id;
}

// infra: handlers/errors.go sandboxNotFoundMsg
function notFoundMsg(id) {
	return `Sandbox ${JSON.stringify(id)} doesn't exist or you don't have access to it`;
}

function lookup(raw) {
	const id = parseSandboxId(raw);
	const sb = sandboxes.get(id);
	if (!sb)
		throw new HttpError(404, notFoundMsg(id));
	return sb;
}

// ---------------------------------------------------------------- listing

// Go's url.QueryUnescape: '+' is a space, a bad escape is an error.
function goQueryUnescape(s) {
	try {
		return decodeURIComponent(s.replace(/\+/g, ' '));
	} catch {
		throw new HttpError(400, 'Error parsing metadata');
	}
}

// infra api/internal/utils/sandboxes_list.go parseFilters: the (already
// URL-decoded) parameter is unescaped once more as a whole, split on '&'
// and '=', and each key and value unescaped again. Hence the SDK's triple
// encoding (pairs, URLSearchParams, the query string).
function parseMetadataFilter(s) {
	if (s === null || s === undefined)
		return null;
	const out = [];
	for (const pair of goQueryUnescape(s).split('&')) {
		const kv = pair.split('=');
		if (kv.length !== 2)
			throw new HttpError(400, 'Error parsing metadata');
		out.push([goQueryUnescape(kv[0]), goQueryUnescape(kv[1])]);
	}
	return out;
}

function matchesMetadata(sb, filter) {
	return !filter || filter.every(([k, v]) => Object.hasOwn(sb.metadata, k) && sb.metadata[k] === v);
}

// infra utils/pagination.go: base64url("<RFC3339Nano>__<id>[__asc]").
function encodeToken(sb, order) {
	const c = `${nowIso(sb.startedAt)}__${sb.id}${order === 'asc' ? '__asc' : ''}`;
	return Buffer.from(c).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
}

function decodeToken(tok, order) {
	if (!/^[A-Za-z0-9_-]+={0,2}$/.test(tok))
		throw new HttpError(400, 'Invalid next token');
	const parts = Buffer.from(tok, 'base64url').toString('utf8').split('__');
	const t = Date.parse(parts[0]);
	if ((parts.length !== 2 && parts.length !== 3) || Number.isNaN(t) || (parts.length === 3 && parts[2] !== 'asc'))
		throw new HttpError(400, 'Invalid next token');
	if ((parts.length === 3 ? 'asc' : 'desc') !== order)
		throw new HttpError(400, 'Invalid next token');	// issued for the other order
	return { t, id: parts[1] };
}

function listV2(q) {
	let states = ['running', 'paused'];
	if (q.get('state')) {
		states = q.get('state').split(',');
		for (const s of states)
			if (s !== 'running' && s !== 'paused')
				throw new HttpError(400, `Invalid state: ${s}`);
	}
	const order = q.get('order') ?? 'desc';
	if (order !== 'asc' && order !== 'desc')
		throw new HttpError(400, `Invalid order: ${order}`);
	let limit = LIMITS.listPage;
	if (q.get('limit') !== null) {
		limit = Number(q.get('limit'));
		if (!Number.isInteger(limit) || limit < 1 || limit > LIMITS.listPage)
			throw new HttpError(400, `limit must be between 1 and ${LIMITS.listPage}`);
	}
	const cursor = q.get('nextToken') ? decodeToken(q.get('nextToken'), order) : null;
	const filter = parseMetadataFilter(q.get('metadata'));
	let after = null;
	if (q.get('startedAfter')) {
		after = Date.parse(q.get('startedAfter'));
		if (Number.isNaN(after))
			throw new HttpError(400, 'Invalid startedAfter');
	}
	const template = q.get('template');
	let items = [...sandboxes.values()].filter((sb) => states.includes(sb.state) &&
		matchesMetadata(sb, filter) && (after === null || sb.startedAt >= after) &&
		(!template || sb.templateID === template || sb.alias === template));
	const headers = {};
	// X-Total-Running: running matches before the cursor and the limit, and
	// only when running sandboxes were asked for.
	if (states.includes('running'))
		headers['X-Total-Running'] = String(items.filter((sb) => sb.state === 'running').length);
	// Newest first with the ID ascending as tie-break (SortPaginatedSandboxesDesc),
	// or oldest first.
	const idCmp = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
	items.sort(order === 'asc' ? (a, b) => (a.startedAt - b.startedAt) || idCmp(a, b)
		: (a, b) => (b.startedAt - a.startedAt) || idCmp(a, b));
	if (cursor) {
		items = items.filter((sb) => (order === 'asc' ? sb.startedAt > cursor.t : sb.startedAt < cursor.t) ||
			(sb.startedAt === cursor.t && sb.id > cursor.id));
	}
	const page = items.slice(0, limit);
	if (items.length > limit)
		headers['X-Next-Token'] = encodeToken(page[page.length - 1], order);
	return { page, headers };
}

// ---------------------------------------------------------------- control plane

function checkApiKey(req) {
	const key = req.headers['x-api-key'];
	// infra: auth/middleware.go (the header is read, its e2b_ prefix
	// checked, then the key validated).
	if (!key)
		throw new HttpError(401, 'authorization header is missing');
	if (!key.startsWith('e2b_'))
		throw new HttpError(401, 'authorization header is malformed');
	if (opts.apiKey !== null ? key !== opts.apiKey : !/^e2b_[0-9a-f]+$/.test(key))
		throw new HttpError(401, 'Invalid API key, please visit https://e2b.dev/docs/api-key for more information.');
}

const ROUTES = [
	['POST', /^\/sandboxes$/, 'create'],
	['POST', /^\/v2\/sandboxes$/, 'create'],
	['GET', /^\/sandboxes$/, 'list'],
	['GET', /^\/v2\/sandboxes$/, 'list'],
	['GET', /^\/sandboxes\/metrics$/, 'metrics'],
	['GET', /^\/sandboxes\/([^/]+)$/, 'get'],
	['DELETE', /^\/sandboxes\/([^/]+)$/, 'kill'],
	['POST', /^\/sandboxes\/([^/]+)\/timeout$/, 'timeout'],
	['POST', /^\/sandboxes\/([^/]+)\/refreshes$/, 'refresh'],
	['POST', /^\/sandboxes\/([^/]+)\/pause$/, 'pause'],
	['POST', /^\/sandboxes\/([^/]+)\/resume$/, 'resume'],
	['POST', /^\/sandboxes\/([^/]+)\/connect$/, 'connect'],
	['POST', /^\/v2\/sandboxes\/([^/]+)\/connect$/, 'connect'],
	['GET', /^\/sandboxes\/([^/]+)\/metrics$/, 'metrics'],
	['GET', /^\/sandboxes\/([^/]+)\/logs$/, 'logs'],
	['GET', /^\/v2\/sandboxes\/([^/]+)\/logs$/, 'logs'],
];

async function controlPlane(req, res, url, entry) {
	if (url.pathname === '/health') {
		if (req.method !== 'GET')
			throw new HttpError(405, 'Method not allowed');
		sendEmpty(res, 204);
		return;
	}
	let route = null;
	let m = null;
	let pathKnown = false;
	for (const r of ROUTES) {
		const mm = r[1].exec(url.pathname);
		if (!mm)
			continue;
		pathKnown = true;
		if (r[0] === req.method) {
			route = r;
			m = mm;
			break;
		}
	}
	if (!route)
		throw new HttpError(pathKnown ? 405 : 404, pathKnown ? 'Method not allowed' : 'Not found');
	const op = route[2];
	entry.op = op;
	checkApiKey(req);
	const sbRaw = m[1];

	const delay = takeFault(['delay'], op, null);
	if (delay)
		await sleep(Math.min(Number(delay.ms) || 1000, 600000));
	const f = takeFault(['rate_limit', 'concurrency', 'http_error', 'drop_connection', 'lose_response'], op, null);
	if (f && f.kind === 'lose_response')
		loseResponse(req, res, f.mode);
	else if (f) {
		if (f.kind === 'drop_connection') {
			req.socket.destroy();
			return;
		}
		if (f.kind === 'rate_limit')
			return apiError(res, 429, f.message ?? 'Rate limit exceeded',
				{ 'Retry-After': String(f.retryAfter ?? 1) });
		if (f.kind === 'concurrency')
			return apiError(res, 429, concurrencyError().message,
				f.retryAfter !== undefined ? { 'Retry-After': String(f.retryAfter) } : {});
		const st = Number(f.status) || 500;
		return apiError(res, st, f.message ?? http.STATUS_CODES[st] ?? 'error',
			f.retryAfter !== undefined ? { 'Retry-After': String(f.retryAfter) } : {},
			f.errorCode ? { error_code: f.errorCode } : {});
	}

	const v2 = url.pathname.startsWith('/v2/');
	switch (op) {
	case 'create': {
		const rl = takeCreateToken();
		if (rl) {
			if (!rl.ok)
				return apiError(res, 429, 'Rate limit exceeded', rl.headers);
			for (const [k, hv] of Object.entries(rl.headers))
				res.setHeader(k, hv);
		}
		const body = await readJson(req);
		const sb = await createSandbox(body, { v2 });
		return sendJson(res, 201, sandboxResponse(sb));
	}
	case 'list': {
		if (!v2) {
			const filter = parseMetadataFilter(url.searchParams.get('metadata'));
			const items = [...sandboxes.values()].filter((sb) =>
				sb.state === 'running' && matchesMetadata(sb, filter));
			return sendJson(res, 200, items.map(listedSandbox));
		}
		const { page, headers } = listV2(url.searchParams);
		return sendJson(res, 200, page.map(listedSandbox), headers);
	}
	case 'get':
		return sendJson(res, 200, sandboxDetail(lookup(sbRaw)));
	case 'kill': {
		const sb = lookup(sbRaw);
		killSandbox(sb);
		return sendEmpty(res, 204);
	}
	case 'timeout': {
		const body = await readJson(req);
		const sb = lookup(sbRaw);
		if (!Number.isInteger(body.timeout))
			throw new HttpError(400, 'Error when parsing request: property "timeout" is missing');
		if (sb.state !== 'running')
			throw new HttpError(404, notFoundMsg(sb.id));
		sb.endAt = capEnd(sb, Date.now() + Math.max(0, body.timeout) * 1000);
		armExpiry(sb);
		return sendEmpty(res, 204);
	}
	case 'refresh': {
		const body = await readJson(req, { optional: true });
		const sb = lookup(sbRaw);
		let d = body.duration ?? 15;
		if (!Number.isInteger(d) || d < 0 || d > 3600)
			throw new HttpError(400, 'Duration must be between 0 and 3600 seconds');
		d = Math.max(d, 15);
		if (sb.state !== 'running')
			throw new HttpError(404, notFoundMsg(sb.id));
		sb.endAt = Math.max(sb.endAt, capEnd(sb, Date.now() + d * 1000));
		armExpiry(sb);
		return sendEmpty(res, 204);
	}
	case 'pause': {
		await readJson(req, { optional: true });
		const sb = lookup(sbRaw);
		if (sb.state === 'paused')
			throw new HttpError(409, `Sandbox ${sb.id} is already paused`);
		pauseSandbox(sb);
		return sendEmpty(res, 204);
	}
	case 'resume': {
		const body = await readJson(req, { optional: true });
		const sb = lookup(sbRaw);
		if (sb.state === 'running')
			throw new HttpError(409, `Sandbox ${sb.id} can't be resumed, it's already running`);
		const t = body.timeout ?? 15;
		if (!Number.isInteger(t) || t <= 0 || t > opts.maxLifetimeSec)
			throw new HttpError(400, 'Invalid timeout');
		checkConcurrency();
		if (body.autoPause !== undefined)
			sb.autoPause = body.autoPause === true;
		resumeSandbox(sb, t);
		return sendJson(res, 201, sandboxResponse(sb));
	}
	case 'connect': {
		const body = await readJson(req, { optional: v2 });
		const sb = lookup(sbRaw);
		let t = body.timeout;
		if (t === undefined && v2)
			t = 300;
		if (!Number.isInteger(t))
			throw new HttpError(400, 'Error when parsing request: property "timeout" is missing');
		if (t <= 0 || t > opts.maxLifetimeSec)
			throw new HttpError(400, 'Invalid timeout');
		if (sb.state === 'running') {
			sb.endAt = Math.max(sb.endAt, capEnd(sb, Date.now() + t * 1000));
			armExpiry(sb);
			return sendJson(res, 200, sandboxResponse(sb));
		}
		checkConcurrency();
		resumeSandbox(sb, t);
		return sendJson(res, 201, sandboxResponse(sb));
	}
	case 'metrics': {
		if (!sbRaw) {
			const ids = (url.searchParams.get('sandbox_ids') ?? '').split(',').filter(Boolean);
			if (ids.length > 100)
				throw new HttpError(400, 'too many sandbox IDs (max 100)');
			const out = {};
			for (const id of ids) {
				const sb = sandboxes.get(id);
				if (sb && sb.state === 'running')
					out[id] = metric();
			}
			return sendJson(res, 200, { sandboxes: out });
		}
		const sb = lookup(sbRaw);
		return sendJson(res, 200, sb.state === 'running' ? [metric()] : []);
	}
	case 'logs':
		lookup(sbRaw);
		return sendJson(res, 200, v2 ? { logs: [] } : { logs: [], logEntries: [] });
	}
	throw new HttpError(500, 'unhandled route');
}

// Token bucket for POST /sandboxes (the published "creation rate"): a
// bucket of createRate tokens refilled at createRate per second. Returns null
// when no rate is configured.
const createBucket = { tokens: null, at: 0 };
function takeCreateToken() {
	const rate = opts.createRate;
	if (!rate)
		return null;
	const now = Date.now();
	if (createBucket.tokens === null)
		createBucket.tokens = rate;
	createBucket.tokens = Math.min(rate, createBucket.tokens + (now - createBucket.at) * rate / 1000);
	createBucket.at = now;
	const ok = createBucket.tokens >= 1;
	if (ok)
		createBucket.tokens -= 1;
	const reset = Math.max(1, Math.ceil((1 - Math.min(1, createBucket.tokens)) / rate));
	const headers = {
		'RateLimit-Limit': String(rate), 'RateLimit-Remaining': String(Math.floor(createBucket.tokens)),
		'RateLimit-Reset': String(reset),
	};
	if (!ok)
		headers['Retry-After'] = String(reset);
	return { ok, headers };
}

function checkConcurrency() {
	const running = [...sandboxes.values()].filter((s) => s.state === 'running').length;
	if (running >= opts.maxSandboxes)
		throw concurrencyError();
}

function metric() {
	const t = Date.now();
	return {
		timestamp: nowIso(t), timestampUnix: Math.floor(t / 1000), cpuCount: 2,
		cpuUsedPct: 0, memUsed: 64 << 20, memTotal: 512 << 20, memCache: 0,
		diskUsed: 16 << 20, diskTotal: 1024 << 20,
	};
}

// ---------------------------------------------------------------- admin

async function admin(req, res, url) {
	const p = url.pathname;
	if (p === '/_emulator/state' && req.method === 'GET') {
		return sendJson(res, 200, {
			counters, faults,
			config: { maxSandboxes: opts.maxSandboxes, maxLifetimeSec: opts.maxLifetimeSec, keepaliveSec: opts.keepaliveSec, createRate: opts.createRate, isolation: opts.isolation },
			sandboxes: [...sandboxes.values()].map((sb) => ({
				...listedSandbox(sb), root: sb.root,
				processes: [...sb.processes.values()].map((pr) => ({ pid: pr.pid, tag: pr.tag })),
			})),
		});
	}
	if (p === '/_emulator/requests' && req.method === 'GET')
		return sendJson(res, 200, requestLog);
	if (p === '/_emulator/requests' && req.method === 'DELETE') {
		requestLog.length = 0;
		return sendEmpty(res, 204);
	}
	if (p === '/_emulator/faults' && req.method === 'GET')
		return sendJson(res, 200, faults);
	if (p === '/_emulator/faults' && req.method === 'POST') {
		const buf = await readBody(req, LIMITS.jsonBody);
		let v;
		try {
			v = JSON.parse(buf.toString('utf8'));
		} catch (e) {
			throw new HttpError(400, `bad JSON: ${e.message}`);
		}
		const list = Array.isArray(v) ? v : Array.isArray(v.faults) ? v.faults : [v];
		const added = list.map(addFault);
		return sendJson(res, 200, added);
	}
	if (p === '/_emulator/faults' && req.method === 'DELETE') {
		faults = [];
		return sendEmpty(res, 204);
	}
	if (p === '/_emulator/config' && req.method === 'POST') {
		const v = await readJson(req);
		if (v.maxSandboxes !== undefined)
			opts.maxSandboxes = clampInt(v.maxSandboxes, 0, LIMITS.sandboxesHard);
		if (v.maxLifetimeSec !== undefined)
			opts.maxLifetimeSec = clampInt(v.maxLifetimeSec, 1, 7 * 86400);
		if (v.keepaliveSec !== undefined)
			opts.keepaliveSec = clampInt(v.keepaliveSec, 1, 3600);
		if (v.createRate !== undefined) {
			opts.createRate = clampInt(v.createRate, 0, 100000);
			createBucket.tokens = null;
		}
		return sendJson(res, 200, { maxSandboxes: opts.maxSandboxes, maxLifetimeSec: opts.maxLifetimeSec, keepaliveSec: opts.keepaliveSec, createRate: opts.createRate });
	}
	const m = /^\/_emulator\/sandboxes\/([a-z0-9]{20})\/expire$/.exec(p);
	if (m && req.method === 'POST') {
		const sb = sandboxes.get(m[1]);
		if (!sb)
			throw new HttpError(404, 'no such sandbox');
		sb.endAt = Date.now();
		expire(sb);
		return sendEmpty(res, 204);
	}
	if (p === '/_emulator/reset' && req.method === 'POST') {
		for (const sb of [...sandboxes.values()])
			killSandbox(sb);
		faults = [];
		requestLog.length = 0;
		return sendEmpty(res, 204);
	}
	throw new HttpError(404, 'Not found');
}

function clampInt(v, lo, hi) {
	if (!Number.isInteger(v) || v < lo || v > hi)
		throw new HttpError(400, `want an integer in ${lo}..${hi}`);
	return v;
}

// ---------------------------------------------------------------- envd routing

// infra shared/pkg/proxy/host.go: the routing headers are read only when
// Host is localhost, a loopback IP or sandbox.<domain>, and then both must
// be there; otherwise the first label of Host is "<port>-<id>[-…]". Here the
// control plane shares the port, so a request with neither is the API's.
// Returns null (control plane), {port, id} or {error} (the proxy's 400).
function envdTarget(req) {
	const hostHdr = (req.headers.host ?? '').toLowerCase();
	const host = hostHdr.startsWith('[') ? hostHdr.slice(1, hostHdr.indexOf(']')) : hostHdr.split(':')[0];
	const local = host === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1' ||
		(host.startsWith('sandbox.') && host.length > 'sandbox.'.length);
	const hid = req.headers['e2b-sandbox-id'];
	const hport = req.headers['e2b-sandbox-port'];
	if (local && (hid || hport)) {
		if (!hid)
			return { error: 'Missing header: E2b-Sandbox-Id' };
		if (!hport)
			return { error: 'Missing header: E2b-Sandbox-Port' };
		if (!/^\d{1,19}$/.test(hport))
			return { error: 'invalid sandbox port' };
		if (!SANDBOX_ID_RE.test(hid))
			return { error: 'invalid sandbox ID' };
		return { port: Number(hport), id: hid };
	}
	const hm = /^(\d+)-([^.-]*)(?:-[^.]*)?\./.exec(host);
	if (!hm)
		return null;
	if (!SANDBOX_ID_RE.test(hm[2]))
		return { error: 'invalid sandbox ID' };
	return { port: Number(hm[1]), id: hm[2] };
}

// The proxy's plain-text errors (net/http's http.Error).
function plainError(res, status, msg) {
	res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
	res.end(`${msg}\n`);
}

function proxyNotFound(res, id) {
	sendJson(res, 502, { sandboxId: id, message: 'The sandbox was not found', code: 502 });
}

async function envd(req, res, url, target, entry) {
	const id = target.id;
	entry.sandboxID = id;
	const op = `envd:${url.pathname}`;
	entry.op = op;
	const sb = sandboxes.get(id);
	if (!sb || sb.state !== 'running')
		return proxyNotFound(res, id);
	// Nothing listens on other ports: the proxy's upstream dial fails.
	if (target.port !== ENVD_PORT)
		return plainError(res, 502, 'Failed to route request to sandbox');

	const delay = takeFault(['delay'], op, id);
	if (delay)
		await sleep(Math.min(Number(delay.ms) || 1000, 600000));
	const f = takeFault(['sandbox_not_found', 'http_error', 'rate_limit', 'drop_connection', 'rpc_error', 'lose_response'], op, id);
	if (f) {
		switch (f.kind) {
		case 'lose_response': loseResponse(req, res, f.mode); break;
		case 'sandbox_not_found': return proxyNotFound(res, id);
		case 'drop_connection': req.socket.destroy(); return;
		case 'rate_limit':
			return sendJson(res, 429, { sandboxId: id, message: f.message ?? 'Too many requests', code: 429 },
				{ 'Retry-After': String(f.retryAfter ?? 1) });
		case 'http_error': {
			const st = Number(f.status) || 500;
			return sendJson(res, st, { code: st, message: f.message ?? http.STATUS_CODES[st] ?? 'error' });
		}
		case 'rpc_error':
			if (url.pathname.startsWith('/process.') || url.pathname.startsWith('/filesystem.')) {
				const code = CONNECT_STATUS[f.code] ? f.code : 'internal';
				if ((req.headers['content-type'] ?? '').startsWith('application/connect+'))
					return streamError(req, res, new RpcError(code, f.message ?? code));
				return sendJson(res, CONNECT_STATUS[code], { code, message: f.message ?? code });
			}
			break;
		}
	}

	if (url.pathname === '/health') {
		return sendEmpty(res, 204);
	}
	const token = req.headers['x-access-token'];
	const tokenOk = !sb.secure || token === sb.accessToken;
	if (url.pathname === '/files') {
		if (req.method === 'GET')
			return filesGet(req, res, url, sb);
		if (req.method === 'POST')
			return filesPost(req, res, url, sb);
		return sendJson(res, 405, { code: 405, message: 'Method not allowed' });
	}
	if (!tokenOk)
		return sendJson(res, 401, { code: 401, message: 'unauthorized access, please provide a valid access token or method signing if supported' });
	if (url.pathname === '/envs' && req.method === 'GET')
		return sendJson(res, 200, sb.envVars);
	if (url.pathname === '/metrics' && req.method === 'GET') {
		const m = metric();
		return sendJson(res, 200, {
			ts: m.timestampUnix, cpu_count: 2, cpu_used_pct: 0, mem_total: m.memTotal,
			mem_used: m.memUsed, mem_total_mib: 512, mem_used_mib: 64, disk_used: m.diskUsed, disk_total: m.diskTotal,
		});
	}
	const rm = /^\/(process\.Process|filesystem\.Filesystem)\/([A-Za-z]+)$/.exec(url.pathname);
	if (rm) {
		if (req.method !== 'POST')
			return sendJson(res, 405, { code: 'unimplemented', message: 'method not allowed' }, { Allow: 'POST' });
		return rpc(req, res, sb, rm[1], rm[2]);
	}
	return sendJson(res, 404, { code: 404, message: 'Not found' });
}

// ---------------------------------------------------------------- paths

function userOf(req, url, fromQuery) {
	let user = null;
	if (fromQuery) {
		user = url.searchParams.get('username');
	} else {
		const a = req.headers.authorization;
		if (a && a.startsWith('Basic ')) {
			const dec = Buffer.from(a.slice(6), 'base64').toString('utf8');
			user = dec.split(':')[0];
		} else if (a) {
			throw new RpcError('unauthenticated', 'invalid authorization header');
		}
	}
	if (!user)
		user = 'user';
	if (user !== 'user' && user !== 'root')
		throw fromQuery ? new HttpError(401, `error looking up user '${user}': unknown user`) :
			new RpcError('unauthenticated', `error looking up user '${user}': unknown user`);
	return user;
}

function homeOf(user) {
	return user === 'root' ? '/root' : `/home/${user}`;
}

// Resolve a sandbox path to a host path under the sandbox root. ".."
// above "/" is refused (the kernel would clamp; a client asking for it is
// confused or probing), and symlinks are followed only while they stay
// inside the root.
function resolveSandboxPath(sb, p, user, mkErr) {
	if (typeof p !== 'string' || p === '')
		p = homeOf(user);
	if (p.includes('\0'))
		throw mkErr(400, 'invalid path');
	if (p === '~' || p.startsWith('~/'))
		p = homeOf(user) + p.slice(1);
	const abs = p.startsWith('/') ? p : `${homeOf(user)}/${p}`;
	const segs = [];
	for (const s of abs.split('/')) {
		if (s === '' || s === '.')
			continue;
		if (s === '..') {
			if (segs.length === 0)
				throw mkErr(400, `path '${p}' escapes the sandbox root`);
			segs.pop();
			continue;
		}
		segs.push(s);
	}
	const sandboxPath = '/' + segs.join('/');
	const host = path.join(sb.root, ...segs);
	confineHost(sb, host, p, mkErr);
	return { sandboxPath, host };
}

function confineHost(sb, host, p, mkErr) {
	const rootReal = fs.realpathSync(sb.root);
	let probe = host;
	for (;;) {
		try {
			const real = fs.realpathSync(probe);
			if (real !== rootReal && !real.startsWith(rootReal + path.sep))
				throw mkErr(400, `path '${p}' escapes the sandbox root`);
			return;
		} catch (e) {
			if (e.code !== 'ENOENT' && e.code !== 'ENOTDIR')
				throw e;
			const up = path.dirname(probe);
			if (up === probe)
				return;
			probe = up;
		}
	}
}

const httpErr = (st, msg) => new HttpError(st, msg);
const rpcErr = (st, msg) => new RpcError(st === 400 ? 'invalid_argument' : 'internal', msg);

// ---------------------------------------------------------------- /files

function signatureFor(p, operation, username, token, exp) {
	const raw = `${p}:${operation}:${username}:${token}${exp ? `:${exp}` : ''}`;
	return 'v1_' + crypto.createHash('sha256').update(raw).digest('base64').replace(/=+$/, '');
}

// envd api/auth.go validateSigning: a token header, when present, must
// match (a signature does not rescue a wrong one); otherwise the signature
// is checked, then its expiry.
function checkFilesAuth(req, url, sb, operation) {
	if (!sb.secure)
		return;
	const token = req.headers['x-access-token'];
	if (token) {
		if (token !== sb.accessToken)
			throw new HttpError(401, 'access token present in header but does not match');
		return;
	}
	const sig = url.searchParams.get('signature');
	if (sig === null)
		throw new HttpError(401, 'missing signature query parameter');
	const exp = url.searchParams.get('signature_expiration');
	const want = signatureFor(url.searchParams.get('path') ?? '', operation,
		url.searchParams.get('username') ?? '', sb.accessToken, exp);
	if (sig !== want)
		throw new HttpError(401, 'invalid signature');
	if (exp !== null && Number(exp) * 1000 < Date.now())
		throw new HttpError(401, 'signature is already expired');
}

async function filesGet(req, res, url, sb) {
	checkFilesAuth(req, url, sb, 'read');
	const user = userOf(req, url, true);
	const { host, sandboxPath } = resolveSandboxPath(sb, url.searchParams.get('path'), user, httpErr);
	let st;
	try {
		st = await fsp.stat(host);
	} catch {
		throw new HttpError(404, `path '${sandboxPath}' does not exist`);
	}
	if (st.isDirectory())
		throw new HttpError(400, `path '${sandboxPath}' is a directory`);
	if (!st.isFile())
		throw new HttpError(400, `path '${sandboxPath}' is not a regular file`);
	const gzip = /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
	const headers = {
		'Content-Type': contentTypeOf(sandboxPath), Vary: 'Accept-Encoding',
		'Content-Disposition': `inline; filename=${JSON.stringify(path.posix.basename(sandboxPath))}`,
	};
	const rs = fs.createReadStream(host);
	if (gzip) {
		res.writeHead(200, { ...headers, 'Content-Encoding': 'gzip' });
		rs.pipe(zlib.createGzip()).pipe(res);
	} else {
		res.writeHead(200, { ...headers, 'Content-Length': st.size });
		rs.pipe(res);
	}
	rs.on('error', () => res.destroy());
}

// envd serves with http.ServeContent (type from the extension, else
// sniffed); the emulator knows a few extensions and otherwise says
// octet-stream.
const CONTENT_TYPES = {
	'.txt': 'text/plain; charset=utf-8', '.json': 'application/json', '.html': 'text/html; charset=utf-8',
	'.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png',
	'.gz': 'application/gzip', '.tar': 'application/x-tar', '.xml': 'text/xml; charset=utf-8',
};
function contentTypeOf(p) {
	return CONTENT_TYPES[path.posix.extname(p).toLowerCase()] ?? 'application/octet-stream';
}

function parseMultipart(buf, contentType) {
	const bm = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
	if (!bm)
		throw new HttpError(500, 'error parsing multipart form: no multipart boundary param in Content-Type');
	const boundary = Buffer.from(`--${bm[1] ?? bm[2].trim()}`);
	const parts = [];
	let pos = buf.indexOf(boundary);
	if (pos < 0)
		throw new HttpError(500, 'error reading form: malformed multipart body');
	for (;;) {
		pos += boundary.length;
		if (buf.slice(pos, pos + 2).toString() === '--')
			break;
		if (buf.slice(pos, pos + 2).toString() !== '\r\n')
			throw new HttpError(500, 'error reading form: malformed multipart body');
		pos += 2;
		const hEnd = buf.indexOf('\r\n\r\n', pos);
		if (hEnd < 0)
			throw new HttpError(500, 'error reading form: malformed part headers');
		const headers = buf.slice(pos, hEnd).toString('utf8');
		const next = buf.indexOf(Buffer.concat([Buffer.from('\r\n'), boundary]), hEnd + 4);
		if (next < 0)
			throw new HttpError(500, 'error reading form: unexpected EOF');
		const data = buf.slice(hEnd + 4, next);
		const cd = /^content-disposition:(.*)$/im.exec(headers);
		const name = cd && /\bname="([^"]*)"/i.exec(cd[1]);
		const filename = cd && /\bfilename="((?:[^"\\]|\\.)*)"/i.exec(cd[1]);
		parts.push({
			name: name ? name[1] : null,
			filename: filename ? decodeFormFilename(filename[1]) : null,
			data,
		});
		pos = next + 2;
	}
	return parts;
}

// undici/browsers percent-escape '"', CR and LF in multipart filenames.
function decodeFormFilename(s) {
	return s.replace(/%22/g, '"').replace(/%0D/gi, '\r').replace(/%0A/gi, '\n').replace(/\\(.)/g, '$1');
}

// What envd answers for a filesystem error on /files.
function fsHttpError(e, sandboxPath) {
	if (e instanceof HttpError)
		return e;
	switch (e.code) {
	case 'ENOENT': return new HttpError(404, `path '${sandboxPath}' does not exist`);
	case 'ENOTDIR': case 'EISDIR': case 'EEXIST':
		return new HttpError(400, `path '${sandboxPath}': ${e.code === 'ENOTDIR' ? 'a parent is not a directory' : 'is a directory'}`);
	case 'EACCES': case 'EPERM': return new HttpError(401, `permission denied on '${sandboxPath}'`);
	case 'ENOSPC': case 'EDQUOT': return new HttpError(507, 'not enough disk space available');
	default: return new HttpError(500, `error writing '${sandboxPath}': ${e.message}`);
	}
}

async function filesPost(req, res, url, sb) {
	checkFilesAuth(req, url, sb, 'write');
	const user = userOf(req, url, true);
	const ctype = (req.headers['content-type'] ?? '').toLowerCase();
	let body = await readBody(req, LIMITS.upload);
	const enc = (req.headers['content-encoding'] ?? '').toLowerCase();
	if (enc === 'gzip') {
		try {
			body = zlib.gunzipSync(body, { maxOutputLength: LIMITS.upload });
		} catch (e) {
			throw new HttpError(400, `invalid gzip body: ${e.message}`);
		}
	} else if (enc && enc !== 'identity') {
		throw new HttpError(415, `unsupported content encoding ${enc}`);
	}
	const qpath = url.searchParams.get('path');
	let files;
	// envd api/upload.go: a "path" parameter names the destination of
	// every "file" part (so two parts collide); otherwise each part's
	// filename does. Other parts are ignored.
	if (ctype.startsWith('multipart/')) {
		const parts = parseMultipart(body, req.headers['content-type']).filter((p) => p.name === 'file');
		files = parts.map((p) => ({ p: qpath ?? p.filename ?? '', data: p.data }));
	} else if (ctype.split(';')[0].trim() === 'application/octet-stream') {
		if (!qpath)
			throw new HttpError(400, 'path query parameter is required for raw body upload');
		files = [{ p: qpath, data: body }];
	} else {
		throw new HttpError(400, `unsupported content type: ${req.headers['content-type'] ?? ''}, expected multipart/form-data or application/octet-stream`);
	}
	const meta = {};
	for (const [k, v] of Object.entries(req.headers))
		if (k.startsWith('x-metadata-'))
			meta[k.slice('x-metadata-'.length)] = String(v);
	const out = [];
	for (const f of files) {
		const { host, sandboxPath } = resolveSandboxPath(sb, f.p, user, httpErr);
		if (out.some((o) => o.path === sandboxPath))
			throw new HttpError(400, `you cannot upload multiple files to the same path '${sandboxPath}' in one upload request, only the first specified file was uploaded`);
		try {
			const st = await fsp.stat(host);
			if (st.isDirectory())
				throw new HttpError(400, `path '${sandboxPath}' is a directory`);
		} catch (e) {
			if (e instanceof HttpError)
				throw e;
		}
		try {
			await fsp.mkdir(path.dirname(host), { recursive: true });
		} catch (e) {
			throw new HttpError(500, `error ensuring directories: ${e.code ?? e.message}`);
		}
		confineHost(sb, path.dirname(host), f.p, httpErr);
		try {
			await fsp.writeFile(host, f.data);
		} catch (e) {
			throw fsHttpError(e, sandboxPath);
		}
		if (Object.keys(meta).length)
			sb.fileMeta.set(sandboxPath, meta);
		out.push({ path: sandboxPath, name: path.posix.basename(sandboxPath), type: 'file',
			...(Object.keys(meta).length && { metadata: meta }) });
	}
	sendJson(res, 200, out);
}

// ---------------------------------------------------------------- Connect RPC

function envelope(flags, obj) {
	const payload = Buffer.from(JSON.stringify(obj));
	const h = Buffer.alloc(5);
	h[0] = flags;
	h.writeUInt32BE(payload.length, 1);
	return Buffer.concat([h, payload]);
}

function streamError(req, res, err) {
	res.writeHead(200, { 'Content-Type': 'application/connect+json' });
	res.end(envelope(0x02, { error: { code: err.code, message: err.message } }));
}

function parseEnvelope(buf) {
	if (buf.length < 5)
		throw new RpcError('invalid_argument', 'protocol error: incomplete envelope');
	const flags = buf[0];
	const len = buf.readUInt32BE(1);
	if (flags & 0x01)
		throw new RpcError('internal', 'protocol error: received compressed message without compression');
	if (buf.length !== 5 + len)
		throw new RpcError('invalid_argument', 'protocol error: envelope length mismatch');
	return parseMsg(buf.slice(5));
}

function parseMsg(buf) {
	if (buf.length === 0)
		return {};
	try {
		const v = JSON.parse(buf.toString('utf8'));
		if (v === null || typeof v !== 'object' || Array.isArray(v))
			throw new Error('message must be a JSON object');
		return v;
	} catch (e) {
		throw new RpcError('invalid_argument', `unmarshal message: ${e.message}`);
	}
}

const STREAMING = new Set(['process.Process/Start', 'process.Process/Connect', 'filesystem.Filesystem/WatchDir']);

async function rpc(req, res, sb, service, method) {
	const full = `${service}/${method}`;
	const ctype = (req.headers['content-type'] ?? '').toLowerCase().split(';')[0].trim();
	const pv = req.headers['connect-protocol-version'];
	const streaming = STREAMING.has(full);
	if (streaming ? ctype !== 'application/connect+json' : ctype !== 'application/json') {
		res.writeHead(415, { 'Accept-Post': streaming ? 'application/connect+json' : 'application/json' });
		res.end();
		return;
	}
	if (pv !== undefined && pv !== '1') {
		const e = new RpcError('invalid_argument', `connect-protocol-version must be "1": got "${pv}"`);
		return streaming ? streamError(req, res, e) : sendJson(res, 400, { code: e.code, message: e.message });
	}
	try {
		const timeoutMs = parseTimeout(req.headers['connect-timeout-ms']);
		const raw = await readBody(req, LIMITS.jsonBody);
		const msg = streaming ? parseEnvelope(raw) : parseMsg(raw);
		if (streaming) {
			if (full === 'process.Process/Start')
				return processStart(req, res, sb, msg, timeoutMs);
			if (full === 'process.Process/Connect')
				return processConnect(req, res, sb, msg, timeoutMs);
			throw new RpcError('unimplemented', `${full} is not implemented by the emulator`);
		}
		const handler = UNARY[full];
		if (!handler)
			throw new RpcError('unimplemented', `${full} is not implemented by the emulator`);
		const out = await handler(req, sb, msg);
		sendJson(res, 200, out);
	} catch (e) {
		let err = e;
		if (e instanceof HttpError)
			err = new RpcError(e.status === 413 ? 'resource_exhausted' : 'invalid_argument', e.message);
		else if (!(e instanceof RpcError))
			err = new RpcError('internal', e.message);
		if (streaming)
			return streamError(req, res, err);
		sendJson(res, CONNECT_STATUS[err.code] ?? 500, { code: err.code, message: err.message });
	}
}

function parseTimeout(h) {
	if (h === undefined)
		return 0;
	if (!/^\d{1,10}$/.test(h))
		throw new RpcError('invalid_argument', `protocol error: invalid connect timeout value: ${h}`);
	return Number(h);
}

// ---------------------------------------------------------------- processes

const SIGNALS = { SIGNAL_SIGTERM: 'SIGTERM', SIGNAL_SIGKILL: 'SIGKILL', 15: 'SIGTERM', 9: 'SIGKILL' };

function selectProcess(sb, sel) {
	if (!sel || typeof sel !== 'object')
		throw new RpcError('invalid_argument', 'process selector is required');
	let p = null;
	if (sel.pid !== undefined) {
		p = sb.processes.get(Number(sel.pid));
		if (!p)
			throw new RpcError('not_found', `process with pid ${sel.pid} not found`);
	} else if (typeof sel.tag === 'string') {
		p = [...sb.processes.values()].find((x) => x.tag === sel.tag);
		if (!p)
			throw new RpcError('not_found', `process with tag ${sel.tag} not found`);
	} else {
		throw new RpcError('invalid_argument', 'invalid process selector');
	}
	return p;
}

class Proc {
	constructor(sb, cfg, tag, pty, wantStdin, user) {
		this.sb = sb;
		this.config = cfg;
		this.tag = tag;
		this.pty = pty;
		this.subscribers = new Set();
		this.ended = false;
		const mountNs = opts.isolation === 'mountns';
		const cwd = cfg.cwd ? resolveSandboxPath(sb, cfg.cwd, user, rpcErr) :
			{ host: path.join(sb.root, homeOf(user)), sandboxPath: homeOf(user) };
		if (!fs.existsSync(cwd.host) || !fs.statSync(cwd.host).isDirectory())
			throw new RpcError('invalid_argument', `cwd '${cwd.sandboxPath}' does not exist`);
		const env = {
			PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
			HOME: mountNs ? homeOf(user) : path.join(sb.root, homeOf(user)),
			USER: user, LOGNAME: user, LANG: 'C.UTF-8',
			E2B_SANDBOX: 'true', E2B_SANDBOX_ID: sb.id,
			...sb.envVars, ...(cfg.envs ?? {}),
			// Last: the mount script binds this path, so no client env may move it.
			E2B_EMULATOR_ROOT: sb.root,
		};
		const stdio = [wantStdin ? 'pipe' : 'ignore', 'pipe', 'pipe'];
		// Like envd, which starts every command through /bin/sh (its
		// OOM/nice wrapper) that execs it: a missing binary is a started
		// process that exits 127, not a start error. unshare and sh both
		// exec, so the pid is the command's own.
		this.child = mountNs ?
			spawn('unshare', ['-m', '--propagation', 'private', '/bin/sh', '-c', MOUNT_NS_SCRIPT,
				'sh', cfg.cmd, ...(cfg.args ?? [])], {
				cwd: sb.root, env: { ...env, E2B_EMULATOR_CWD: cwd.sandboxPath }, detached: true, stdio,
			}) :
			spawn('/bin/sh', ['-c', 'exec "$@"', 'sh', cfg.cmd, ...(cfg.args ?? [])],
				{ cwd: cwd.host, env, detached: true, stdio });
		this.spawnError = null;
		this.child.on('error', (e) => {
			this.spawnError = e;
			this.finish(null, null, e);
		});
		this.pid = this.child.pid;
		if (this.child.stdin)
			this.child.stdin.on('error', () => {});
		this.child.stdout.on('data', (d) => this.output(pty ? 'pty' : 'stdout', d));
		this.child.stderr.on('data', (d) => this.output(pty ? 'pty' : 'stderr', d));
		// 'close' waits for every holder of the pipes; a backgrounded
		// grandchild (nohup worker &) would hold the end event forever,
		// which envd (StdoutPipe + Wait) does not do. Give the pipes a
		// moment to drain after 'exit', then end anyway.
		this.child.on('close', (code, signal) => this.finish(code, signal, null));
		this.child.on('exit', (code, signal) => {
			const t = setTimeout(() => this.finish(code, signal, null), 200);
			t.unref();
		});
	}

	output(stream, d) {
		for (let i = 0; i < d.length; i += LIMITS.dataChunk) {
			const part = d.subarray(i, i + LIMITS.dataChunk);
			this.emit({ event: { data: { [stream]: part.toString('base64') } } });
		}
	}

	emit(ev) {
		for (const s of this.subscribers)
			s.event(ev);
	}

	finish(code, signal, err) {
		if (this.ended)
			return;
		this.ended = true;
		clearTimeout(this.deadlineTimer);
		this.sb.processes.delete(this.pid);
		const end = {};
		if (signal) {
			end.exitCode = -1;
			end.status = `signal: ${signalWord(signal)}`;
			end.error = end.status;
		} else if (err) {
			end.exitCode = -1;
			end.status = err.message;
			end.error = err.message;
		} else {
			if (code !== 0)
				end.exitCode = code;
			end.exited = true;
			end.status = `exit status ${code}`;
			if (code !== 0)
				end.error = end.status;
		}
		for (const s of this.subscribers)
			s.end(end);
		this.subscribers.clear();
	}

	kill(sig) {
		if (this.ended || !this.pid)
			return;
		try {
			process.kill(-this.pid, sig);
		} catch {
			try {
				this.child.kill(sig);
			} catch { /* already gone */ }
		}
	}
}

function signalWord(sig) {
	return { SIGKILL: 'killed', SIGTERM: 'terminated', SIGINT: 'interrupt', SIGHUP: 'hangup' }[sig] ?? sig;
}

// One server-streaming response: envelopes, keepalives, backpressure bound,
// and the stream faults (cut, deadline, garbage).
class EventStream {
	constructor(req, res, sb, proc, timeoutMs, opName) {
		this.res = res;
		this.proc = proc;
		this.ownsProcess = true;
		this.closed = false;
		this.sent = 0;
		const ka = Number(req.headers['keepalive-ping-interval']);
		this.keepaliveMs = (Number.isFinite(ka) && ka > 0 ? Math.min(ka, 3600) : opts.keepaliveSec) * 1000;
		this.cut = takeFault(['cut_stream'], opName, sb.id);
		this.garbage = takeFault(['garbage_stream'], opName, sb.id);
		this.deadlineFault = takeFault(['deadline_exceeded'], opName, sb.id);
		res.writeHead(200, { 'Content-Type': 'application/connect+json' });
		res.flushHeaders();
		res.on('close', () => this.detach());
		this.armKeepalive();
		if (timeoutMs > 0)
			this.deadline = setTimeout(() => this.deadlineExceeded(), timeoutMs);
	}

	armKeepalive() {
		clearTimeout(this.kaTimer);
		this.kaTimer = setTimeout(() => {
			this.write(envelope(0, { event: { keepalive: {} } }));
			this.armKeepalive();
		}, this.keepaliveMs);
	}

	write(buf) {
		if (this.closed)
			return;
		if (this.res.writableLength > LIMITS.streamBacklog) {
			// The client is not reading; drop it rather than buffer
			// without bound. The process keeps running, as in envd.
			this.res.destroy();
			this.detach();
			return;
		}
		this.res.write(buf);
	}

	event(ev) {
		if (this.closed)
			return;
		if (this.garbage && this.sent >= (this.garbage.afterEvents ?? 1))
			return this.sendGarbage();
		if (this.cut && this.sent >= (this.cut.afterEvents ?? 1)) {
			// mode "reset": TCP close mid-body; "eof": a clean end of
			// the HTTP body with no end-of-stream envelope.
			if (this.cut.mode === 'eof')
				this.res.end();
			else
				this.res.destroy();
			this.detach();
			return;
		}
		this.write(envelope(0, ev));
		this.sent++;
		if (ev.event && ev.event.data)
			this.armKeepalive();
		if (this.deadlineFault && ev.event && ev.event.start)
			setImmediate(() => this.deadlineExceeded());
	}

	sendGarbage() {
		const v = this.garbage.variant ?? 'bad_json';
		if (v === 'huge_frame') {
			const h = Buffer.alloc(5);
			h.writeUInt32BE(0xfffffff0, 1);
			this.res.write(Buffer.concat([h, Buffer.from('{"event":')]));
		} else if (v === 'truncated') {
			const e = envelope(0, { event: { data: { stdout: 'dHJ1bmNhdGVk' } } });
			this.res.write(e.subarray(0, e.length - 4));
		} else if (v === 'bad_flags') {
			this.res.write(envelope(0x01, { event: { keepalive: {} } }));
		} else {
			const payload = Buffer.from('{"event": {"data": {"stdout": !!not json');
			const h = Buffer.alloc(5);
			h.writeUInt32BE(payload.length, 1);
			this.res.write(Buffer.concat([h, payload]));
		}
		this.res.end();
		this.detach();
	}

	end(endEv) {
		if (this.closed)
			return;
		this.event({ event: { end: endEv } });
		if (this.closed)
			return;
		this.write(envelope(0x02, {}));
		this.res.end();
		this.detach();
	}

	sever() {
		if (this.closed)
			return;
		this.res.destroy();
		this.detach();
	}

	deadlineExceeded() {
		if (this.closed)
			return;
		// envd runs the process under the stream's deadline: it dies with it.
		if (this.proc && this.ownsProcess)
			this.proc.kill('SIGKILL');
		this.write(envelope(0x02, { error: { code: 'deadline_exceeded', message: 'context deadline exceeded' } }));
		this.res.end();
		this.detach();
	}

	detach() {
		if (this.closed)
			return;
		this.closed = true;
		clearTimeout(this.kaTimer);
		clearTimeout(this.deadline);
		if (this.proc)
			this.proc.subscribers.delete(this);
	}
}

function processStart(req, res, sb, msg, timeoutMs) {
	const cfg = msg.process;
	if (!cfg || typeof cfg !== 'object' || typeof cfg.cmd !== 'string' || cfg.cmd === '')
		throw new RpcError('invalid_argument', 'process.cmd is required');
	if (cfg.args !== undefined && (!Array.isArray(cfg.args) || !cfg.args.every((a) => typeof a === 'string')))
		throw new RpcError('invalid_argument', 'process.args must be a list of strings');
	if (cfg.envs !== undefined && !isStringMap(cfg.envs))
		throw new RpcError('invalid_argument', 'process.envs must be a string map');
	if (cfg.cwd !== undefined && typeof cfg.cwd !== 'string')
		throw new RpcError('invalid_argument', 'process.cwd must be a string');
	if (sb.processes.size >= LIMITS.processesPerSandbox)
		throw new RpcError('resource_exhausted', `too many processes (max ${LIMITS.processesPerSandbox})`);
	const tag = typeof msg.tag === 'string' ? msg.tag : undefined;
	const user = userOf(req, null, false);
	// envd's default for stdin is true (old clients); the SDK sends false.
	const wantStdin = msg.stdin === undefined ? true : msg.stdin === true;
	const proc = new Proc(sb, { cmd: cfg.cmd, args: cfg.args ?? [], envs: cfg.envs ?? {}, ...(cfg.cwd && { cwd: cfg.cwd }) },
		tag, !!msg.pty, wantStdin, user);
	if (proc.spawnError || !proc.pid) {
		// spawn() reports ENOENT asynchronously; answer the way envd does.
		// envd: handler.Start() failing is invalid_argument.
		return streamError(req, res, new RpcError('invalid_argument',
			`error starting process '${[cfg.cmd, ...(cfg.args ?? [])].join(' ')}': exec: "${cfg.cmd}": ${proc.spawnError ? proc.spawnError.code : 'ENOENT'}`));
	}
	sb.processes.set(proc.pid, proc);
	const s = new EventStream(req, res, sb, proc, timeoutMs, 'envd:/process.Process/Start');
	proc.subscribers.add(s);
	s.event({ event: { start: { pid: proc.pid } } });
}

function processConnect(req, res, sb, msg, timeoutMs) {
	const proc = selectProcess(sb, msg.process);
	if (proc.subscribers.size >= 16)
		throw new RpcError('resource_exhausted', 'too many streams attached to this process');
	const s = new EventStream(req, res, sb, proc, timeoutMs, 'envd:/process.Process/Connect');
	s.ownsProcess = false;
	proc.subscribers.add(s);
	s.event({ event: { start: { pid: proc.pid } } });
}

const UNARY = {
	'process.Process/List': (req, sb) => ({
		processes: [...sb.processes.values()].map((p) => ({
			config: p.config, pid: p.pid, ...(p.tag !== undefined && { tag: p.tag }),
		})),
	}),
	'process.Process/SendInput': (req, sb, msg) => {
		const p = selectProcess(sb, msg.process);
		const input = msg.input ?? {};
		const b64 = input.stdin ?? input.pty;
		if (typeof b64 !== 'string')
			throw new RpcError('invalid_argument', 'input.stdin or input.pty is required');
		if (!p.child.stdin || p.child.stdin.destroyed || p.child.stdin.writableEnded)
			throw new RpcError('failed_precondition', 'stdin not enabled or closed');
		p.child.stdin.write(Buffer.from(b64, 'base64'));
		return {};
	},
	'process.Process/CloseStdin': (req, sb, msg) => {
		const p = selectProcess(sb, msg.process);
		if (p.pty)
			throw new RpcError('failed_precondition', 'cannot close stdin of a PTY process');
		if (p.child.stdin)
			p.child.stdin.end();
		return {};
	},
	'process.Process/SendSignal': (req, sb, msg) => {
		const p = selectProcess(sb, msg.process);
		const sig = SIGNALS[msg.signal];
		if (!sig)
			throw new RpcError('invalid_argument', `invalid signal: ${msg.signal}`);
		p.kill(sig);
		return {};
	},
	'process.Process/Update': (req, sb, msg) => {
		const p = selectProcess(sb, msg.process);
		if (msg.pty && !p.pty)
			throw new RpcError('failed_precondition', 'process is not a PTY');
		return {};
	},
	'filesystem.Filesystem/Stat': async (req, sb, msg) => {
		const user = userOf(req, null, false);
		const { host, sandboxPath } = resolveSandboxPath(sb, str(msg.path, 'path'), user, rpcErr);
		return { entry: await entryInfo(sb, host, sandboxPath) };
	},
	'filesystem.Filesystem/MakeDir': async (req, sb, msg) => {
		const user = userOf(req, null, false);
		const { host, sandboxPath } = resolveSandboxPath(sb, str(msg.path, 'path'), user, rpcErr);
		try {
			const st = await fsp.stat(host);
			if (st.isDirectory())
				throw new RpcError('already_exists', `directory '${sandboxPath}' already exists`);
			throw new RpcError('invalid_argument', `path '${sandboxPath}' already exists and is not a directory`);
		} catch (e) {
			if (e instanceof RpcError)
				throw e;
		}
		await fsp.mkdir(host, { recursive: true });
		return { entry: await entryInfo(sb, host, sandboxPath) };
	},
	'filesystem.Filesystem/Move': async (req, sb, msg) => {
		const user = userOf(req, null, false);
		const src = resolveSandboxPath(sb, str(msg.source, 'source'), user, rpcErr);
		const dst = resolveSandboxPath(sb, str(msg.destination, 'destination'), user, rpcErr);
		if (!fs.existsSync(src.host))
			throw new RpcError('not_found', `path '${src.sandboxPath}' does not exist`);
		await fsp.mkdir(path.dirname(dst.host), { recursive: true });
		await fsp.rename(src.host, dst.host);
		return { entry: await entryInfo(sb, dst.host, dst.sandboxPath) };
	},
	'filesystem.Filesystem/Remove': async (req, sb, msg) => {
		const user = userOf(req, null, false);
		const { host, sandboxPath } = resolveSandboxPath(sb, str(msg.path, 'path'), user, rpcErr);
		if (host === sb.root)
			throw new RpcError('permission_denied', 'refusing to remove /');
		if (!fs.existsSync(host))
			throw new RpcError('not_found', `path '${sandboxPath}' does not exist`);
		await fsp.rm(host, { recursive: true, force: true });
		return {};
	},
	'filesystem.Filesystem/ListDir': async (req, sb, msg) => {
		const user = userOf(req, null, false);
		const { host, sandboxPath } = resolveSandboxPath(sb, str(msg.path, 'path'), user, rpcErr);
		let depth = msg.depth === undefined ? 1 : Number(msg.depth);
		if (!Number.isInteger(depth) || depth < 0)
			throw new RpcError('invalid_argument', 'depth must be a non-negative integer');
		if (depth === 0)
			depth = 1;
		let st;
		try {
			st = await fsp.stat(host);
		} catch {
			throw new RpcError('not_found', `path '${sandboxPath}' does not exist`);
		}
		if (!st.isDirectory())
			throw new RpcError('invalid_argument', `path '${sandboxPath}' is not a directory`);
		const entries = [];
		const walk = async (h, sp, d) => {
			for (const name of (await fsp.readdir(h)).sort()) {
				if (entries.length >= 10000)
					return;
				const ch = path.join(h, name);
				const csp = sp === '/' ? `/${name}` : `${sp}/${name}`;
				const e = await entryInfo(sb, ch, csp);
				entries.push(e);
				if (e.type === 'FILE_TYPE_DIRECTORY' && d > 1)
					await walk(ch, csp, d - 1);
			}
		};
		await walk(host, sandboxPath, depth);
		return { entries };
	},
};

function str(v, name) {
	if (typeof v !== 'string')
		throw new RpcError('invalid_argument', `${name} is required`);
	return v;
}

async function entryInfo(sb, host, sandboxPath) {
	let st;
	try {
		st = await fsp.lstat(host);
	} catch {
		throw new RpcError('not_found', `path '${sandboxPath}' does not exist`);
	}
	let type = 'FILE_TYPE_FILE';
	let symlinkTarget;
	if (st.isDirectory())
		type = 'FILE_TYPE_DIRECTORY';
	else if (st.isSymbolicLink()) {
		type = 'FILE_TYPE_SYMLINK';
		symlinkTarget = await fsp.readlink(host);
	}
	const meta = sb.fileMeta.get(sandboxPath);
	return {
		name: path.posix.basename(sandboxPath) || '/', type, path: sandboxPath,
		size: String(st.size), mode: st.mode & 0o7777, permissions: permString(st),
		owner: 'user', group: 'user', modifiedTime: st.mtime.toISOString(),
		...(symlinkTarget && { symlinkTarget }), ...(meta && { metadata: meta }),
	};
}

function permString(st) {
	const t = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'L' : '-';
	let s = '';
	for (let i = 8; i >= 0; i--)
		s += (st.mode & (1 << i)) ? 'rwx'[(8 - i) % 3] : '-';
	return t + s;
}

// ---------------------------------------------------------------- server

server = http.createServer({ requestTimeout: 0, maxHeaderSize: 16384 }, async (req, res) => {
	const h = req.headers;
	const entry = {
		t: new Date().toISOString(), method: req.method, path: req.url.split('?')[0],
		query: req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '',
		op: null, sandboxID: null, status: null,
		headers: {
			'user-agent': h['user-agent'], 'content-type': h['content-type'],
			'connect-timeout-ms': h['connect-timeout-ms'],
			'keepalive-ping-interval': h['keepalive-ping-interval'],
			'e2b-sandbox-id': h['e2b-sandbox-id'], 'e2b-sandbox-port': h['e2b-sandbox-port'],
			host: h.host,
			// presence only: the log must not hold credentials
			'x-api-key': h['x-api-key'] !== undefined, 'x-access-token': h['x-access-token'] !== undefined,
			authorization: h.authorization !== undefined,
		},
	};
	requestLog.push(entry);
	if (requestLog.length > LIMITS.requestLog)
		requestLog.shift();
	res.on('finish', () => { entry.status = res.statusCode; });
	res.on('close', () => { if (entry.status === null) entry.status = res.writableFinished ? res.statusCode : 'cut'; });
	let url;
	try {
		url = new URL(req.url, 'http://emulator.invalid');
	} catch {
		return apiError(res, 400, 'bad request URL');
	}
	const target = envdTarget(req);
	try {
		if (url.pathname.startsWith('/_emulator/'))
			await admin(req, res, url);
		else if (target && target.error)
			plainError(res, 400, target.error);
		else if (target)
			await envd(req, res, url, target, entry);
		else
			await controlPlane(req, res, url, entry);
	} catch (e) {
		// The client went away mid-request: nothing to answer.
		if (res.headersSent || req.aborted || e.code === 'ECONNRESET' || e.message === 'aborted') {
			res.destroy();
			return;
		}
		if (e instanceof HttpError)
			return apiError(res, e.status, e.message, {}, e.extra ?? {});
		if (e instanceof RpcError)
			return sendJson(res, CONNECT_STATUS[e.code] ?? 500, { code: e.code, message: e.message });
		if (!opts.quiet)
			process.stderr.write(`e2b-emulator: internal error on ${req.method} ${url.pathname}: ${e.stack}\n`);
		apiError(res, 500, `internal error: ${e.message}`);
	}
});
server.keepAliveTimeout = 640000;
server.headersTimeout = 60000;

for (const f of opts.faults)
	addFault(f);


server.on('error', (e) => die(`listen: ${e.message}`));
server.listen(opts.port, opts.host, () => {
	const a = server.address();
	process.stdout.write(`e2b-emulator listening on ${a.address}:${a.port}\n`);
});
