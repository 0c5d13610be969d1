// Raw-protocol checks of the emulator: what the C provider relies on and the
// official SDK does not exercise (Host routing, v1 create, legacy IDs, error
// shapes for bad input, envelopes byte by byte, keepalives, Connect re-attach,
// signals, every fault variant). Node standard library only; talks only to
// the emulator on loopback. Prints one line per step and "N passed, N failed".
//
// usage: E2B_EMULATOR_URL=http://127.0.0.1:N E2B_EMULATOR_API_KEY=e2b_... node selftest.mjs

import http from 'node:http';
import net from 'node:net';
import zlib from 'node:zlib';

const EMU = new URL(process.env.E2B_EMULATOR_URL ?? '');
if (!/^127\./.test(EMU.hostname)) {
	console.error('selftest: E2B_EMULATOR_URL must point at 127.x.x.x');
	process.exit(2);
}
const KEY = process.env.E2B_EMULATOR_API_KEY ?? 'e2b_00';

let passed = 0;
let failed = 0;
let n = 0;
async function step(name, fn) {
	n++;
	try {
		await fn();
		passed++;
		console.log(`ok   ${String(n).padStart(2)} ${name}`);
	} catch (e) {
		failed++;
		console.log(`FAIL ${String(n).padStart(2)} ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 2).join(' | ') : e}`);
	}
}
function check(c, msg) {
	if (!c)
		throw new Error(`check failed: ${msg}`);
}

// One HTTP exchange; resolves {status, headers, body} or {error} when the
// connection died.
function req(method, path, { headers = {}, body, host } = {}) {
	return new Promise((resolve) => {
		const r = http.request({
			host: EMU.hostname, port: EMU.port, method, path, agent: false,
			headers: { ...(host && { Host: host }), ...headers },
		}, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
			res.on('error', (e) => resolve({ status: res.statusCode, error: e, body: Buffer.concat(chunks) }));
			res.on('aborted', () => resolve({ status: res.statusCode, error: new Error('aborted'), body: Buffer.concat(chunks) }));
		});
		r.on('error', (e) => resolve({ error: e }));
		if (body !== undefined)
			r.write(body);
		r.end();
	});
}

const api = (method, path, json, extra = {}) => req(method, path, {
	headers: { 'X-API-Key': KEY, ...(json !== undefined && { 'Content-Type': 'application/json' }), ...extra },
	body: json === undefined ? undefined : (typeof json === 'string' ? json : JSON.stringify(json)),
});
const jsonOf = (r) => JSON.parse(r.body.toString('utf8'));
const fault = (f) => req('POST', '/_emulator/faults', { body: JSON.stringify(f) });

function env(obj, flags = 0) {
	const p = Buffer.from(JSON.stringify(obj));
	const h = Buffer.alloc(5);
	h[0] = flags;
	h.writeUInt32BE(p.length, 1);
	return Buffer.concat([h, p]);
}

function parseEnvelopes(buf) {
	const out = [];
	let i = 0;
	while (i + 5 <= buf.length) {
		const len = buf.readUInt32BE(i + 1);
		if (i + 5 + len > buf.length)
			return { out, rest: buf.length - i };
		out.push({ flags: buf[i], msg: JSON.parse(buf.subarray(i + 5, i + 5 + len).toString('utf8')) });
		i += 5 + len;
	}
	return { out, rest: buf.length - i };
}

function envd(sb, method, path, { headers = {}, body, viaHost = false } = {}) {
	const h = { ...(sb.envdAccessToken && { 'X-Access-Token': sb.envdAccessToken }), ...headers };
	if (viaHost)
		return req(method, path, { headers: h, body, host: `49983-${sb.sandboxID}.e2b-emulator.test` });
	return req(method, path, { headers: { 'E2b-Sandbox-Id': sb.sandboxID, 'E2b-Sandbox-Port': '49983', ...h }, body });
}

const start = (sb, process, headers = {}, extra = {}) => envd(sb, 'POST', '/process.Process/Start', {
	headers: { 'Content-Type': 'application/connect+json', 'Connect-Protocol-Version': '1', ...headers },
	body: env({ process, stdin: false, ...extra }),
});
const unary = (sb, method, msg, headers = {}) => envd(sb, 'POST', method, {
	headers: { 'Content-Type': 'application/json', 'Connect-Protocol-Version': '1', ...headers },
	body: JSON.stringify(msg),
});
const bash = (cmd) => ({ cmd: '/bin/bash', args: ['-l', '-c', cmd] });
const events = (r) => parseEnvelopes(r.body).out;
const stdoutOf = (evs) => evs.filter((e) => e.msg.event && e.msg.event.data && e.msg.event.data.stdout)
	.map((e) => Buffer.from(e.msg.event.data.stdout, 'base64').toString()).join('');

let sb;		// secured v2 sandbox
let sb1;	// unsecured v1 sandbox

await req('POST', '/_emulator/reset');

await step('control plane: auth errors are 401 with the Error shape', async () => {
	let r = await req('GET', '/v2/sandboxes');
	check(r.status === 401 && jsonOf(r).code === 401 && typeof jsonOf(r).message === 'string', `no key ${r.status}`);
	r = await req('GET', '/v2/sandboxes', { headers: { 'X-API-Key': 'nope' } });
	check(r.status === 401, `bad key ${r.status}`);
	r = await req('GET', '/health');
	check(r.status === 204, `health ${r.status}`);
});

await step('create: v1 honours secure:false, v2 is always secured, 201 bodies', async () => {
	let r = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60, metadata: { owner: 'selftest', job: 'a b&c=d' } });
	check(r.status === 201, `v1 ${r.status} ${r.body}`);
	sb1 = jsonOf(r);
	check(sb1.envdAccessToken === undefined && sb1.envdVersion === '0.6.13' && sb1.clientID, JSON.stringify(sb1));
	r = await api('POST', '/v2/sandboxes', { templateID: 'base', metadata: { owner: 'selftest', job: 'x' } });
	check(r.status === 201, `v2 ${r.status}`);
	sb = jsonOf(r);
	check(/^[a-z0-9]{20}$/.test(sb.sandboxID) && typeof sb.envdAccessToken === 'string', JSON.stringify(sb));
	const d = jsonOf(await api('GET', `/sandboxes/${sb.sandboxID}`));
	const life = Date.parse(d.endAt) - Date.parse(d.startedAt);
	check(life === 300000, `v2 default timeout gave ${life} ms`);
});

await step('create: bad input gets 400s, a huge body 413', async () => {
	for (const [body, why] of [['{"templateID":', 'truncated JSON'], [{}, 'no templateID'],
		[{ templateID: 'base', timeout: 0 }, 'timeout 0'], [{ templateID: 'base', timeout: 999999 }, 'timeout too long'],
		[{ templateID: 'base', metadata: { a: 1 } }, 'non-string metadata'], ['[]', 'array body'],
		[{ templateID: 'base', timeout: '5' }, 'string timeout']]) {
		const r = await api('POST', '/v2/sandboxes', body);
		check(r.status === 400 && jsonOf(r).code === 400, `${why}: ${r.status} ${r.body}`);
	}
	const r = await api('POST', '/v2/sandboxes', JSON.stringify({ templateID: 'base', pad: 'x'.repeat(2 << 20) }));
	check(r.status === 413 || r.error, `huge body ${r.status}`);
});

await step('sandbox IDs: legacy <id>-<clientID> accepted, malformed 400, unknown 404', async () => {
	let r = await api('GET', `/sandboxes/${sb.sandboxID}-${sb.clientID}`);
	check(r.status === 200 && jsonOf(r).sandboxID === sb.sandboxID, `legacy ${r.status}`);
	for (const bad of ['UPPER', 'short', '%zz', 'a'.repeat(21)]) {
		r = await api('GET', `/sandboxes/${bad}`);
		check(r.status === 400 && /Invalid sandbox ID/.test(jsonOf(r).message), `${bad}: ${r.status}`);
	}
	r = await api('GET', `/sandboxes/${'z'.repeat(20)}`);
	check(r.status === 404 && jsonOf(r).code === 404, `unknown ${r.status}`);
	r = await api('DELETE', `/sandboxes/${'z'.repeat(20)}`);
	check(r.status === 404, `kill unknown ${r.status}`);
});

await step('list: metadata filter with escaped values, v1 vs v2, order, bad params', async () => {
	// The SDK's encoding: each key and value, then URLSearchParams, then the
	// query string; the server undoes all three (infra parseFilters).
	const meta = (o) => encodeURIComponent(new URLSearchParams(Object.fromEntries(
		Object.entries(o).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)]))).toString());
	let r = await api('GET', `/v2/sandboxes?metadata=${meta({ job: 'a b&c=d' })}`);
	let ids = jsonOf(r).map((s) => s.sandboxID);
	check(ids.length === 1 && ids[0] === sb1.sandboxID, `escaped filter ${ids}`);
	check(r.headers['x-total-running'] === '1', `X-Total-Running ${r.headers['x-total-running']}`);
	r = await api('GET', `/v2/sandboxes?metadata=${meta({ job: 'a b&c=d', owner: 'other' })}`);
	check(jsonOf(r).length === 0 && r.headers['x-total-running'] === '0', 'every pair must match');
	r = await api('GET', `/v2/sandboxes?metadata=${encodeURIComponent('nopair')}`);
	check(r.status === 400, `bad metadata ${r.status}`);
	r = await api('GET', `/v2/sandboxes?metadata=${encodeURIComponent('owner=selftest')}&state=paused`);
	check(r.status === 200 && jsonOf(r).length === 0 && r.headers['x-total-running'] === undefined, 'paused only');
	const byOrder = async (order) => jsonOf(await api('GET', `/v2/sandboxes?metadata=${encodeURIComponent('owner=selftest')}&order=${order}`));
	const asc = await byOrder('asc');
	const desc = await byOrder('desc');
	const key = (x) => `${x.startedAt}|${x.sandboxID}`;
	check(asc.length === 2 && asc.every((x, i) => i === 0 || Date.parse(asc[i - 1].startedAt) <= Date.parse(x.startedAt)), `asc ${asc.map(key)}`);
	check(desc.every((x, i) => i === 0 || Date.parse(desc[i - 1].startedAt) >= Date.parse(x.startedAt)), `desc ${desc.map(key)}`);
	r = await api('GET', `/sandboxes?metadata=${encodeURIComponent('owner=selftest')}`);
	check(r.status === 200 && jsonOf(r).length === 2, 'v1 list');
	for (const bad of ['state=dead', 'order=up', 'limit=0', 'limit=101', 'nextToken=garbage', 'nextToken=%25%25',
		`nextToken=${Buffer.from('2026-01-01T00:00:00Z__abc__asc').toString('base64url')}`])
		check((await api('GET', `/v2/sandboxes?${bad}`)).status === 400, `${bad} not 400`);
});

await step('timeout and refreshes move endAt as the reference says', async () => {
	const end = async () => Date.parse(jsonOf(await api('GET', `/sandboxes/${sb1.sandboxID}`)).endAt);
	const e0 = await end();
	let r = await api('POST', `/sandboxes/${sb1.sandboxID}/timeout`, { timeout: 5 });
	check(r.status === 204, `timeout ${r.status}`);
	const e1 = await end();
	check(e1 < e0, 'timeout shortens');
	r = await api('POST', `/sandboxes/${sb1.sandboxID}/refreshes`, { duration: 1 });
	check(r.status === 204, `refresh ${r.status}`);
	const e2 = await end();
	check(e2 > e1, 'refresh extends to at least 15 s');
	r = await api('POST', `/sandboxes/${sb1.sandboxID}/refreshes`, { duration: 5000 });
	check(r.status === 400, `refresh 5000 ${r.status}`);
	r = await api('POST', `/sandboxes/${sb1.sandboxID}/timeout`, { timeout: 10 ** 7 });
	check(r.status === 204, 'huge timeout is capped silently');
	const d = jsonOf(await api('GET', `/sandboxes/${sb1.sandboxID}`));
	check(Date.parse(d.endAt) - Date.parse(d.startedAt) <= 3600 * 1000, 'capped at max lifetime');
	r = await api('POST', `/sandboxes/${sb1.sandboxID}/timeout`, {});
	check(r.status === 400, 'missing timeout');
});

await step('envd routing: headers and <port>-<id>.<domain> Host, 502s', async () => {
	let r = await envd(sb, 'GET', '/health');
	check(r.status === 204, `health via headers ${r.status}`);
	r = await envd(sb, 'GET', '/health', { viaHost: true });
	check(r.status === 204, `health via Host ${r.status}`);
	r = await req('GET', '/health', { host: `8080-${sb.sandboxID}.e2b-emulator.test` });
	check(r.status === 502 && /Failed to route request to sandbox/.test(r.body.toString()), `closed port ${r.status}`);
	r = await req('GET', '/health', { host: `49983-${sb.sandboxID}-${sb.clientID}.e2b-emulator.test` });
	check(r.status === 204, `Host with client ID ${r.status}`);
	r = await req('GET', '/health', { headers: { 'E2b-Sandbox-Id': sb.sandboxID } });
	check(r.status === 400 && /Missing header: E2b-Sandbox-Port/.test(r.body.toString()), `missing port header ${r.status}`);
	r = await req('GET', '/health', { headers: { 'E2b-Sandbox-Id': 'BAD', 'E2b-Sandbox-Port': '49983' } });
	check(r.status === 400 && /invalid sandbox ID/.test(r.body.toString()), `bad id header ${r.status}`);
	r = await req('GET', '/health', { host: '49983-NOPE.e2b-emulator.test' });
	check(r.status === 400, `bad id host ${r.status}`);
	r = await req('GET', '/health', { headers: { 'E2b-Sandbox-Id': 'z'.repeat(20), 'E2b-Sandbox-Port': '49983' } });
	const b = jsonOf(r);
	check(r.status === 502 && b.code === 502 && b.sandboxId === 'z'.repeat(20) && b.message === 'The sandbox was not found', `missing ${r.status}`);
});

await step('envd auth: token required on RPC of a secured sandbox, not on v1 insecure', async () => {
	let r = await envd({ ...sb, envdAccessToken: 'wrong' }, 'POST', '/process.Process/List',
		{ headers: { 'Content-Type': 'application/json' }, body: '{}' });
	check(r.status === 401 && jsonOf(r).code === 401, `wrong token ${r.status}`);
	r = await unary({ ...sb1, envdAccessToken: undefined }, '/process.Process/List', {});
	check(r.status === 200 && Array.isArray(jsonOf(r).processes), `insecure ${r.status}`);
});

await step('Start: envelopes in order, base64 data, proto3 zero omission', async () => {
	const r = await start(sb, bash('printf "a\\0b"; echo err >&2; exit 0'));
	check(r.status === 200 && r.headers['content-type'] === 'application/connect+json', `status ${r.status} ${r.headers['content-type']}`);
	const p = parseEnvelopes(r.body);
	check(p.rest === 0, 'trailing bytes');
	const evs = p.out;
	check(evs[0].flags === 0 && Number.isInteger(evs[0].msg.event.start.pid), 'first is start');
	const last = evs[evs.length - 1];
	check(last.flags === 2 && JSON.stringify(last.msg) === '{}', `EOS ${JSON.stringify(last)}`);
	const end = evs[evs.length - 2].msg.event.end;
	check(end && end.exitCode === undefined && end.exited === true && end.status === 'exit status 0' && end.error === undefined,
		`end ${JSON.stringify(end)}`);
	check(stdoutOf(evs) === 'a\0b', 'binary stdout');
});

await step('Start: non-zero exit, signals (-1), tag, List, Connect re-attach, SIGTERM', async () => {
	let r = await start(sb, bash('exit 42'));
	let end = events(r).find((e) => e.msg.event && e.msg.event.end).msg.event.end;
	check(end.exitCode === 42 && end.exited === true && end.error === 'exit status 42', JSON.stringify(end));
	// A long process with a tag, in the background: read its stream lazily.
	const sp = start(sb, bash('echo up; sleep 30'), {}, { tag: 'bg1' });
	let pid;
	for (let i = 0; i < 100 && !pid; i++) {
		const l = jsonOf(await unary(sb, '/process.Process/List', {}));
		const p = l.processes.find((x) => x.tag === 'bg1');
		pid = p && p.pid;
		if (!pid)
			await new Promise((res) => setTimeout(res, 20));
	}
	check(pid, 'tagged process not listed');
	const cp = envd(sb, 'POST', '/process.Process/Connect', {
		headers: { 'Content-Type': 'application/connect+json' }, body: env({ process: { tag: 'bg1' } }),
	});
	await new Promise((res) => setTimeout(res, 100));
	r = await unary(sb, '/process.Process/SendSignal', { process: { pid }, signal: 'SIGNAL_SIGTERM' });
	check(r.status === 200 && r.body.toString() === '{}', `signal ${r.status}`);
	for (const [what, rr] of [['start', await sp], ['connect', await cp]]) {
		const evs = events(rr);
		check(evs[0].msg.event.start.pid === pid, `${what}: start pid`);
		end = evs.find((e) => e.msg.event && e.msg.event.end).msg.event.end;
		check(end.exitCode === -1 && !end.exited && end.status === 'signal: terminated', `${what}: ${JSON.stringify(end)}`);
	}
	r = await unary(sb, '/process.Process/SendSignal', { process: { pid }, signal: 'SIGNAL_SIGKILL' });
	check(r.status === 404 && jsonOf(r).code === 'not_found', `signal gone ${r.status}`);
	r = await envd(sb, 'POST', '/process.Process/Connect', {
		headers: { 'Content-Type': 'application/connect+json' }, body: env({ process: { pid } }),
	});
	const e = events(r);
	check(r.status === 200 && e.length === 1 && e[0].flags === 2 && e[0].msg.error.code === 'not_found', 'connect gone');
});

await step('commands see the sandbox filesystem (mount namespace) or at least HOME', async () => {
	const iso = jsonOf(await req('GET', '/_emulator/state')).config.isolation;
	await envd(sb, 'POST', '/files?path=/home/user/abs.txt', { headers: { 'Content-Type': 'application/octet-stream' }, body: 'abs' });
	if (iso === 'mountns') {
		const tmpName = `/tmp/e2b-selftest-${process.pid}-${Date.now()}`;
		const r = await start(sb, bash(`cat /home/user/abs.txt; echo; pwd; echo $HOME; echo made > ${tmpName}`));
		const out = stdoutOf(events(r)).split('\n');
		check(out[0] === 'abs' && out[1] === '/home/user' && out[2] === '/home/user', `mountns view ${JSON.stringify(out)}`);
		const f = await envd(sb, 'GET', `/files?path=${tmpName}`);
		check(f.status === 200 && f.body.toString() === 'made\n', `/tmp written by a command ${f.status}`);
		let hostHas = true;
		try {
			(await import('node:fs')).accessSync(tmpName);
		} catch {
			hostHas = false;
		}
		check(!hostHas, 'the command wrote to the host /tmp');
	} else {
		check(iso === 'none', `isolation ${iso}`);
		const r = await start(sb, bash('cat "$HOME/abs.txt"; echo; pwd'));
		const out = stdoutOf(events(r)).split('\n');
		check(out[0] === 'abs' && out[1].endsWith('/home/user') && out[1] !== '/home/user', `host view ${JSON.stringify(out)}`);
	}
});

await step('keepalive events after Keepalive-Ping-Interval of silence', async () => {
	const r = await start(sb, bash('sleep 2.5; echo done'), { 'Keepalive-Ping-Interval': '1' });
	const ka = events(r).filter((e) => e.msg.event && e.msg.event.keepalive);
	check(ka.length >= 1, 'no keepalive');
	check(JSON.stringify(ka[0].msg) === '{"event":{"keepalive":{}}}', JSON.stringify(ka[0].msg));
});

await step('Connect-Timeout-Ms is the process lifetime: deadline_exceeded EOS, process gone', async () => {
	const r = await start(sb, bash('echo x; sleep 30'), { 'Connect-Timeout-Ms': '300' });
	const evs = events(r);
	const last = evs[evs.length - 1];
	check(last.flags === 2 && last.msg.error.code === 'deadline_exceeded', JSON.stringify(last));
	const pid = evs[0].msg.event.start.pid;
	let alive = true;
	for (let i = 0; i < 100 && alive; i++) {
		alive = jsonOf(await unary(sb, '/process.Process/List', {})).processes.some((p) => p.pid === pid);
		if (alive)
			await new Promise((res) => setTimeout(res, 20));
	}
	check(!alive, 'process survived its deadline');
});

await step('stdin: SendInput then CloseStdin ends cat', async () => {
	const sp = start(sb, { cmd: '/bin/cat', args: [] }, {}, { stdin: true, tag: 'cat1' });
	let pid;
	for (let i = 0; i < 100 && !pid; i++) {
		const p = jsonOf(await unary(sb, '/process.Process/List', {})).processes.find((x) => x.tag === 'cat1');
		pid = p && p.pid;
		if (!pid)
			await new Promise((res) => setTimeout(res, 20));
	}
	let r = await unary(sb, '/process.Process/SendInput', { process: { pid }, input: { stdin: Buffer.from('ping\n').toString('base64') } });
	check(r.status === 200, `send ${r.status}`);
	r = await unary(sb, '/process.Process/CloseStdin', { process: { pid } });
	check(r.status === 200, `close ${r.status}`);
	const evs = events(await sp);
	check(stdoutOf(evs) === 'ping\n', `cat gave ${JSON.stringify(stdoutOf(evs))}`);
});

await step('RPC bad input: content types, envelopes, schema, unknown method', async () => {
	let r = await envd(sb, 'POST', '/process.Process/Start', { headers: { 'Content-Type': 'application/json' }, body: '{}' });
	check(r.status === 415, `json to stream ${r.status}`);
	r = await envd(sb, 'POST', '/process.Process/List', { headers: { 'Content-Type': 'text/plain' }, body: '{}' });
	check(r.status === 415, `text/plain ${r.status}`);
	const eos = async (body, code, why) => {
		const rr = await envd(sb, 'POST', '/process.Process/Start', { headers: { 'Content-Type': 'application/connect+json' }, body });
		const e = events(rr);
		check(rr.status === 200 && e.length === 1 && e[0].flags === 2 && e[0].msg.error.code === code, `${why}: ${rr.status} ${rr.body}`);
	};
	await eos(Buffer.from([0, 0, 0]), 'invalid_argument', 'short envelope');
	await eos(Buffer.concat([Buffer.from([0, 0, 0, 0, 50]), Buffer.from('{}')]), 'invalid_argument', 'length mismatch');
	await eos(env({ process: {} }), 'invalid_argument', 'no cmd');
	await eos(env({ process: { cmd: '/bin/true', args: 'x' } }), 'invalid_argument', 'args not a list');
	// envd runs commands through /bin/sh, which fails to exec: exit 127.
	let rr = await start(sb, { cmd: '/no/such/binary', args: [] });
	let ee = events(rr);
	const endEv = ee.find((e) => e.msg.event && e.msg.event.end);
	check(ee[0].msg.event.start && endEv && endEv.msg.event.end.exitCode === 127, `missing binary ${rr.body}`);
	await eos(env({ process: { cmd: '/bin/true', cwd: '/nope' } }), 'invalid_argument', 'missing cwd');
	r = await envd(sb, 'POST', '/process.Process/Start', {
		headers: { 'Content-Type': 'application/connect+json', 'Connect-Timeout-Ms': 'soon' }, body: env({ process: bash('true') }),
	});
	check(events(r)[0].msg.error.code === 'invalid_argument', 'bad timeout header');
	r = await unary(sb, '/process.Process/Nope', {});
	check(r.status === 501 && jsonOf(r).code === 'unimplemented', `unknown method ${r.status}`);
	r = await unary(sb, '/process.Process/SendSignal', { process: { pid: 1 }, signal: 'SIGNAL_SIGHUP' });
	check(r.status === 404 || r.status === 400, `odd signal ${r.status}`);
	r = await envd(sb, 'POST', '/process.Process/List', { headers: { 'Content-Type': 'application/json' }, body: 'not json' });
	check(r.status === 400 && jsonOf(r).code === 'invalid_argument', `garbage JSON ${r.status}`);
	r = await unary(sb, '/process.Process/List', {}, { Authorization: `Basic ${Buffer.from('mallory:').toString('base64')}` });
	check(r.status === 200, 'List ignores the user');
	r = await envd(sb, 'POST', '/process.Process/Start', {
		headers: { 'Content-Type': 'application/connect+json', Authorization: `Basic ${Buffer.from('mallory:').toString('base64')}` },
		body: env({ process: bash('true') }),
	});
	check(events(r)[0].msg.error.code === 'unauthenticated', 'unknown user');
});

await step('/files: octet-stream, gzip both ways, errors, symlink escape refused', async () => {
	const f = (method, q, o = {}) => envd(sb, method, `/files?${q}`, o);
	let r = await f('POST', 'path=/home/user/x/y.txt', { headers: { 'Content-Type': 'application/octet-stream' }, body: 'yy' });
	check(r.status === 200 && jsonOf(r)[0].path === '/home/user/x/y.txt', `write ${r.status} ${r.body}`);
	r = await f('POST', 'path=z.txt', {
		headers: { 'Content-Type': 'application/octet-stream', 'Content-Encoding': 'gzip', 'X-Metadata-Owner': 'me' },
		body: zlib.gzipSync('zz'),
	});
	check(r.status === 200 && jsonOf(r)[0].path === '/home/user/z.txt' && jsonOf(r)[0].metadata.owner === 'me', `gzip write ${r.body}`);
	r = await f('GET', 'path=%2Fhome%2Fuser%2Fz.txt', { headers: { 'Accept-Encoding': 'gzip' } });
	check(r.status === 200 && r.headers['content-encoding'] === 'gzip' && zlib.gunzipSync(r.body).toString() === 'zz', 'gzip read');
	r = await f('GET', 'path=/home/user/x');
	check(r.status === 400, `dir read ${r.status}`);
	r = await f('GET', 'path=/home/user/none');
	check(r.status === 404 && jsonOf(r).code === 404, `missing ${r.status}`);
	r = await f('POST', 'path=/home/user/z.txt/sub', { headers: { 'Content-Type': 'application/octet-stream' }, body: 'q' });
	check(r.status === 500 && /ensuring directories/.test(jsonOf(r).message), `under a file ${r.status}`);
	r = await f('POST', 'path=/home/user/a', { headers: { 'Content-Type': 'text/plain' }, body: 'q' });
	check(r.status === 400 && /unsupported content type/.test(jsonOf(r).message), `content type ${r.status}`);
	r = await f('POST', '', { headers: { 'Content-Type': 'application/octet-stream' }, body: 'q' });
	check(r.status === 400, `no path ${r.status}`);
	r = await f('POST', 'path=/x', { headers: { 'Content-Type': 'multipart/form-data; boundary=zz' }, body: '--zz\r\nbroken' });
	check(r.status === 500 && jsonOf(r).code === 500, `broken multipart ${r.status}`);
	const mp = (parts) => parts.map(([n, fn, d]) => `--B\r\nContent-Disposition: form-data; name="${n}"; filename="${fn}"\r\n\r\n${d}\r\n`).join('') + '--B--\r\n';
	r = await f('POST', 'path=/home/user/dup.txt', { headers: { 'Content-Type': 'multipart/form-data; boundary=B' }, body: mp([['file', 'a', '1'], ['file', 'b', '2']]) });
	check(r.status === 400 && /multiple files to the same path/.test(jsonOf(r).message), `duplicate ${r.status}`);
	r = await f('POST', '', { headers: { 'Content-Type': 'multipart/form-data; boundary=B' }, body: mp([['file', '/home/user/m1', 'one'], ['other', 'x', 'ignored'], ['file', 'm2', 'two']]) });
	check(r.status === 200 && jsonOf(r).map((e) => e.path).join() === '/home/user/m1,/home/user/m2', `multi ${r.body}`);
	r = await f('GET', 'path=/home/user/m2');
	check(r.body.toString() === 'two', 'multi part content');
	r = await envd({ ...sb, envdAccessToken: 'wrong' }, 'GET', '/files?path=/home/user/m2');
	check(r.status === 401 && /does not match/.test(jsonOf(r).message), `wrong token on /files ${r.status}`);
	r = await envd({ ...sb, envdAccessToken: undefined }, 'GET', '/files?path=/home/user/m2');
	check(r.status === 401 && /missing signature/.test(jsonOf(r).message), `no token, no signature ${r.status}`);
	r = await f('GET', 'path=/home/user/z.txt&username=mallory');
	check(r.status === 401, `unknown user ${r.status}`);
	// A symlink made by a command that points out of the root.
	await start(sb, bash('ln -s / ~/out'));
	r = await f('GET', 'path=/home/user/out/etc/passwd');
	check(r.status === 400 && /escapes/.test(jsonOf(r).message), `symlink escape ${r.status} ${r.body}`);
	r = await f('POST', 'path=/home/user/out/tmp/evil', { headers: { 'Content-Type': 'application/octet-stream' }, body: 'q' });
	check(r.status === 400, `symlink escape write ${r.status}`);
});

await step('faults: garbage variants, delay, drop, http_error, count, sandboxID', async () => {
	const s = () => start(sb, bash('echo 1; sleep 0.1; echo 2'));
	await fault({ kind: 'garbage_stream', variant: 'huge_frame', op: 'envd:/process.Process/Start' });
	let r = await s();
	check(r.body.length > 5 && r.body[r.body.length - 14] === 0 && r.body.readUInt32BE(r.body.length - 13) === 0xfffffff0, 'huge frame header');
	await fault({ kind: 'garbage_stream', variant: 'bad_flags', op: 'envd:/process.Process/Start' });
	r = await s();
	check(events(r).some((e) => e.flags === 1), 'bad flags');
	await fault({ kind: 'cut_stream', mode: 'eof', op: 'envd:/process.Process/Start', afterEvents: 1 });
	r = await s();
	const e = events(r);
	check(!r.error && e.length === 1 && e[0].msg.event.start, `eof cut ${e.length}`);
	await fault({ kind: 'cut_stream', op: 'envd:/process.Process/Start', afterEvents: 1 });
	r = await s();
	check(r.error, 'reset cut should fail the read');
	await fault({ kind: 'drop_connection', op: 'list' });
	r = await api('GET', '/v2/sandboxes');
	check(r.error && r.status === undefined, 'drop');
	await fault({ kind: 'http_error', op: 'create', status: 503, errorCode: 'sandbox_capacity_unavailable', count: 2 });
	for (let i = 0; i < 2; i++) {
		r = await api('POST', '/v2/sandboxes', { templateID: 'base' });
		check(r.status === 503 && jsonOf(r).error_code === 'sandbox_capacity_unavailable', `503 #${i}`);
	}
	await fault({ kind: 'delay', op: 'get', ms: 300 });
	const t0 = Date.now();
	r = await api('GET', `/sandboxes/${sb.sandboxID}`);
	check(r.status === 200 && Date.now() - t0 >= 290, 'delay');
	await fault({ kind: 'sandbox_not_found', op: 'envd', sandboxID: sb1.sandboxID });
	r = await envd(sb, 'GET', '/health');
	check(r.status === 204, 'fault for another sandbox fired');
	r = await envd(sb1, 'GET', '/health');
	check(r.status === 502, 'sandbox-scoped fault');
	await fault({ kind: 'rate_limit', op: 'envd', retryAfter: 2 });
	r = await envd(sb, 'GET', '/health');
	check(r.status === 429 && r.headers['retry-after'] === '2', 'envd 429');
	await fault({ kind: 'rpc_error', op: 'envd:/process.Process/List', code: 'unavailable', message: 'nah' });
	r = await unary(sb, '/process.Process/List', {});
	check(r.status === 503 && jsonOf(r).code === 'unavailable', `rpc unavailable ${r.status}`);
	const st = jsonOf(await req('GET', '/_emulator/state'));
	check(st.faults.length === 0, `faults left: ${JSON.stringify(st.faults)}`);
	r = await req('POST', '/_emulator/faults', { body: '{"kind":"meteor"}' });
	check(r.status === 400, 'unknown fault kind');
});

await step('lose_response: the operation happens, its response never arrives', async () => {
	const md = { lost: `x${process.pid}` };
	const q = `/v2/sandboxes?metadata=${encodeURIComponent(new URLSearchParams(md).toString())}`;
	await fault({ kind: 'lose_response', op: 'create' });
	let r = await api('POST', '/sandboxes', { templateID: 'base', timeout: 60, metadata: md });
	check(r.error && r.status === undefined, `the create's response should be lost, got ${r.status}`);
	r = await api('GET', q);
	const list = jsonOf(r);
	check(r.status === 200 && list.length === 1, `the lost create made exactly one sandbox: ${r.body}`);
	const id = list[0].sandboxID;
	await fault({ kind: 'lose_response', op: 'envd:/files', mode: 'reset' });
	const lost = { sandboxID: id, envdAccessToken: jsonOf(await api('GET', `/sandboxes/${id}`)).envdAccessToken };
	r = await envd(lost, 'POST', '/files?path=/tmp/lost.txt', { headers: { 'Content-Type': 'application/octet-stream' }, body: 'written' });
	check(r.error && r.status === undefined, 'the upload\'s response should be lost');
	r = await envd(lost, 'GET', '/files?path=/tmp/lost.txt');
	check(r.status === 200 && r.body.toString() === 'written', `the lost upload wrote: ${r.status}`);
	await fault({ kind: 'lose_response', op: 'kill', mode: 'reset' });
	r = await api('DELETE', `/sandboxes/${id}`);
	check(r.error && r.status === undefined, 'the kill\'s response should be lost');
	r = await api('GET', `/sandboxes/${id}`);
	check(r.status === 404, `the lost kill killed: ${r.status}`);
	const log = jsonOf(await req('GET', '/_emulator/requests'));
	check(log.some((e) => e.op === 'create' && e.status === 'cut'), 'the request log shows the create as cut');
	r = await req('POST', '/_emulator/faults', { body: '{"kind":"lose_response","mode":"later"}' });
	check(r.status === 400, `a bad mode is refused: ${r.status}`);
});

await step('killing a sandbox cuts its open streams (no end event), then 502s', async () => {
	const victim = jsonOf(await api('POST', '/v2/sandboxes', { templateID: 'base', metadata: { owner: 'victim' } }));
	const sp = start(victim, bash('echo started; sleep 30'));
	let listed = false;
	for (let i = 0; i < 100 && !listed; i++) {
		listed = jsonOf(await unary(victim, '/process.Process/List', {})).processes.length === 1;
		if (!listed)
			await new Promise((res) => setTimeout(res, 20));
	}
	check(listed, 'victim process not running');
	check((await api('DELETE', `/sandboxes/${victim.sandboxID}`)).status === 204, 'kill');
	const r = await sp;
	const evs = parseEnvelopes(r.body).out;
	check(r.error && !evs.some((e) => e.flags === 2 || (e.msg.event && e.msg.event.end)), `stream ended cleanly: ${r.body}`);
	check((await envd(victim, 'GET', '/health')).status === 502, 'health after kill');
});

await step('concurrency limit and autoPause expiry', async () => {
	await req('POST', '/_emulator/config', { body: JSON.stringify({ maxSandboxes: 2 }) });
	let r = await api('POST', '/v2/sandboxes', { templateID: 'base' });
	check(r.status === 429 && /concurrent/.test(jsonOf(r).message), `over limit ${r.status}`);
	await req('POST', '/_emulator/config', { body: JSON.stringify({ maxSandboxes: 20 }) });
	r = await api('POST', '/v2/sandboxes', { templateID: 'base', autoPause: true, metadata: { owner: 'selftest' } });
	const ap = jsonOf(r);
	await req('POST', `/_emulator/sandboxes/${ap.sandboxID}/expire`);
	r = await api('GET', `/sandboxes/${ap.sandboxID}`);
	check(r.status === 200 && jsonOf(r).state === 'paused' && jsonOf(r).lifecycle.onTimeout === 'pause', 'auto-paused');
	r = await api('GET', `/sandboxes?metadata=${encodeURIComponent('owner=selftest')}`);
	check(!jsonOf(r).some((s) => s.sandboxID === ap.sandboxID), 'v1 list shows a paused sandbox');
	r = await api('POST', `/sandboxes/${ap.sandboxID}/timeout`, { timeout: 30 });
	check(r.status === 404, `timeout on paused ${r.status}`);
	r = await api('POST', `/sandboxes/${ap.sandboxID}/resume`, { timeout: 30 });
	check(r.status === 201, `resume ${r.status}`);
	r = await api('POST', `/sandboxes/${ap.sandboxID}/resume`, { timeout: 30 });
	check(r.status === 409, `resume running ${r.status}`);
	r = await api('POST', `/sandboxes/${ap.sandboxID}/connect`, {});
	check(r.status === 400, `v1 connect without timeout ${r.status}`);
	check((await api('DELETE', `/sandboxes/${ap.sandboxID}`)).status === 204, 'kill');
});

await step('pagination walks every sandbox exactly once', async () => {
	const made = [];
	for (let i = 0; i < 5; i++)
		made.push(jsonOf(await api('POST', '/v2/sandboxes', { templateID: 'base', metadata: { owner: 'pager' } })).sandboxID);
	const seen = [];
	let tok = null;
	for (let pages = 0; pages < 10; pages++) {
		const r = await api('GET', `/v2/sandboxes?limit=2&metadata=${encodeURIComponent('owner=pager')}${tok ? `&nextToken=${tok}` : ''}`);
		seen.push(...jsonOf(r).map((s) => s.sandboxID));
		tok = r.headers['x-next-token'];
		if (!tok)
			break;
	}
	check(seen.length === 5 && new Set(seen).size === 5 && made.every((id) => seen.includes(id)), `seen ${seen}`);
	for (const id of made)
		await api('DELETE', `/sandboxes/${id}`);
});

await step('abuse: dropped streams, a reader that stalls, garbage HTTP, huge headers, cut bodies', async () => {
	const raw = (fn) => new Promise((res) => {
		const r = http.request({ host: EMU.hostname, port: EMU.port, method: 'POST', path: '/process.Process/Start', agent: false,
			headers: { 'E2b-Sandbox-Id': sb.sandboxID, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': sb.envdAccessToken,
				'Content-Type': 'application/connect+json' } }, (rs) => fn(r, rs, res));
		r.on('error', () => res());
		r.end(env({ process: bash('yes | head -c 30000000') }));
	});
	for (let i = 0; i < 3; i++) {
		await raw((r, rs, done) => {
			let got = 0;
			rs.on('data', (d) => {
				got += d.length;
				if (got > 65536) {
					r.destroy();
					done();
				}
			});
			rs.on('error', () => {});
		});
	}
	// Never read: the emulator must bound what it buffers and drop us.
	await raw((r, rs, done) => {
		rs.pause();
		rs.on('error', () => {});
		setTimeout(() => {
			r.destroy();
			done();
		}, 1500);
	});
	const sock = (bytes) => new Promise((res) => {
		const so = net.connect(Number(EMU.port), EMU.hostname, () => so.write(bytes));
		let first = '';
		so.on('data', (d) => { first += d.toString('latin1'); });
		so.on('error', () => res(first));
		so.on('close', () => res(first));
		setTimeout(() => { so.destroy(); res(first); }, 500);
	});
	check(/^HTTP\/1\.1 400/.test(await sock('GARBAGE / HTTP/9\r\n\r\n\0\x01')), 'garbage request line');
	check(/^HTTP\/1\.1 431/.test(await sock(`GET /health HTTP/1.1\r\nX: ${'a'.repeat(40000)}\r\n\r\n`)), 'huge header');
	await sock(`POST /v2/sandboxes HTTP/1.1\r\nHost: x\r\nX-API-Key: ${KEY}\r\nContent-Length: 1000\r\n\r\n{"templ`);
	const r = await envd(sb, 'GET', '/health');
	check(r.status === 204, `emulator unwell after abuse: ${r.status}`);
	const h = await api('GET', '/health');
	check(h.status === 204, 'control plane unwell after abuse');
});

await step('request log records ops and header presence, never credentials', async () => {
	const log = jsonOf(await req('GET', '/_emulator/requests'));
	const s = JSON.stringify(log);
	check(!s.includes(KEY) && !s.includes(sb.envdAccessToken), 'a credential leaked into the log');
	check(log.some((r) => r.op === 'envd:/process.Process/Start' && r.headers['x-access-token'] === true), 'start logged');
});

await req('POST', '/_emulator/reset');
console.log(`emulator-selftest: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
