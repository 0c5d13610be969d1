// Conformance run of the official E2B JavaScript SDK (the version pinned in
// package.json) against the emulator: if the vendor's own client works
// against it, the emulator speaks E2B's protocol. Prints one line per step
// and "N passed, N failed"; exits non-zero on any failure.
//
// Must never reach a real E2B host: before the SDK is loaded, every socket
// connect is checked and anything but loopback is refused and recorded, and
// the SDK is pointed at the emulator by both options and environment, with a
// never-resolving domain (.invalid) as a backstop.
//
// usage: E2B_EMULATOR_URL=http://127.0.0.1:N E2B_EMULATOR_API_KEY=e2b_... node conformance.mjs

import net from 'node:net';
import crypto from 'node:crypto';

// ---------------------------------------------------------------- network guard

const violations = [];

function isLoopback(host) {
	if (host === undefined || host === null || host === '' || host === 'localhost')
		return host === 'localhost' || host === '' || host === undefined || host === null;
	const h = String(host).replace(/^\[|\]$/g, '');
	if (net.isIPv4(h))
		return h.startsWith('127.');
	if (net.isIPv6(h))
		return h === '::1' || /^::ffff:127\./i.test(h);
	return false;
}

const realConnect = net.Socket.prototype.connect;
let connectImpl = realConnect;	// swapped for a stub in the guard's self-test
function guardedConnect(...args) {
	let o = args[0];
	if (Array.isArray(o))
		o = o[0];
	let host;
	if (o && typeof o === 'object') {
		if (o.path)
			return connectImpl.apply(this, args);	// Unix socket
		host = o.host ?? 'localhost';
	} else if (typeof o === 'number' || /^\d+$/.test(String(o))) {
		host = typeof args[1] === 'string' ? args[1] : 'localhost';
	} else {
		return connectImpl.apply(this, args);		// a Unix socket path
	}
	if (!isLoopback(host)) {
		violations.push(String(host));
		const err = new Error(`conformance network guard: refused connection to non-loopback host ${host}`);
		process.nextTick(() => this.destroy(err));
		return this;
	}
	return connectImpl.apply(this, args);
}
net.Socket.prototype.connect = guardedConnect;

const EMU = process.env.E2B_EMULATOR_URL;
const API_KEY = process.env.E2B_EMULATOR_API_KEY ?? 'e2b_0000000000000000000000000000000000000000';
if (!EMU || !isLoopback(new URL(EMU).hostname)) {
	console.error(`conformance: E2B_EMULATOR_URL must be an http://127.x.x.x:PORT URL, got ${EMU}`);
	process.exit(2);
}
// Environment as a backstop for any code path that ignores the options.
process.env.E2B_API_URL = EMU;
process.env.E2B_SANDBOX_URL = EMU;
process.env.E2B_DOMAIN = 'e2b-emulator.invalid';
process.env.E2B_API_KEY = API_KEY;
delete process.env.E2B_DEBUG;
delete process.env.E2B_ACCESS_TOKEN;

const e2b = await import('e2b');
const {
	Sandbox, CommandExitError, RateLimitError, NotFoundError, SandboxNotFoundError,
	FileNotFoundError, TimeoutError, AuthenticationError, SandboxError, InvalidArgumentError,
} = e2b;

// apiUrl and sandboxUrl are ConnectionConfig options read by every static
// and instance call (connectionConfig.ts); sandboxUrl makes envd calls go to
// one base URL with E2b-Sandbox-Id/-Port headers, which the emulator routes.
const CONN = { apiKey: API_KEY, apiUrl: EMU, sandboxUrl: EMU, domain: 'e2b-emulator.invalid', requestTimeoutMs: 15000 };
const RUN = crypto.randomBytes(4).toString('hex');

// ---------------------------------------------------------------- harness

let passed = 0;
let failed = 0;
let stepNo = 0;

async function step(name, fn) {
	stepNo++;
	try {
		await fn();
		passed++;
		console.log(`ok   ${String(stepNo).padStart(2)} ${name}`);
	} catch (e) {
		failed++;
		console.log(`FAIL ${String(stepNo).padStart(2)} ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
	}
}

function check(cond, msg) {
	if (!cond)
		throw new Error(`check failed: ${msg}`);
}

async function expectReject(p, cls, what) {
	try {
		await p;
	} catch (e) {
		check(e instanceof cls, `${what}: want ${cls.name}, got ${e && e.name}: ${e && e.message}`);
		return e;
	}
	throw new Error(`${what}: expected ${cls.name}, but the call succeeded`);
}

async function admin(method, p, body) {
	const res = await fetch(`${EMU}/_emulator${p}`, {
		method, headers: body ? { 'Content-Type': 'application/json' } : {},
		body: body ? JSON.stringify(body) : undefined,
	});
	if (!res.ok)
		throw new Error(`admin ${method} ${p}: ${res.status} ${await res.text()}`);
	return res.status === 204 ? null : res.json();
}

const fault = (f) => admin('POST', '/faults', f);

async function listAll(query, extra = {}) {
	const pg = Sandbox.list({ ...CONN, query, ...extra });
	const out = [];
	while (pg.hasNext)
		out.push(...await pg.nextItems());
	return out;
}

// ---------------------------------------------------------------- steps

let sbx;		// the main sandbox
let sbx2;		// a second one for pagination

await step('network guard is installed and refuses non-loopback hosts', async () => {
	check(net.Socket.prototype.connect === guardedConnect, 'guard not installed');
	check(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost'), 'loopback refused');
	check(!isLoopback('api.e2b.app') && !isLoopback('8.8.8.8') && !isLoopback('sandbox.e2b.app'), 'remote allowed');
	// Drive the guard itself with the real connect swapped for a stub, so
	// this self-test cannot send a packet even if the guard were broken.
	const reached = [];
	connectImpl = function stub(o) { reached.push(o.host ?? o); this.destroy(); return this; };
	try {
		const err = await new Promise((resolve) => {
			const s = new net.Socket();
			s.on('error', resolve);
			s.on('close', () => resolve(null));
			s.connect({ host: 'api.e2b.app', port: 443 });
		});
		check(err && /network guard/.test(err.message), `guard did not refuse: ${err}`);
		check(reached.length === 0, 'refused connect still reached the socket layer');
		violations.length = 0;
		new net.Socket().connect({ host: '127.0.0.1', port: 9 });
		check(reached.length === 1, 'loopback connect did not pass through');
	} finally {
		connectImpl = realConnect;
	}
	await admin('DELETE', '/requests');
});

await step('Sandbox.create returns a secured sandbox (POST /v2/sandboxes)', async () => {
	sbx = await Sandbox.create('base', { ...CONN, timeoutMs: 120000, metadata: { suite: 'conformance', run: RUN, 'odd key': 'a&b=c/ü+%' } });
	check(/^[a-z0-9]{20}$/.test(sbx.sandboxId), `sandbox id ${sbx.sandboxId}`);
	const st = await admin('GET', '/state');
	check(st.sandboxes.some((s) => s.sandboxID === sbx.sandboxId), 'emulator does not know the sandbox');
	const reqs = await admin('GET', '/requests');
	check(reqs.some((r) => r.method === 'POST' && r.path === '/v2/sandboxes' && r.status === 201), 'no 201 create seen');
});

await step('getInfo reports template, metadata, state and times', async () => {
	const info = await Sandbox.getInfo(sbx.sandboxId, CONN);
	check(info.sandboxId === sbx.sandboxId, 'id');
	check(info.templateId === 'base', `template ${info.templateId}`);
	check(info.metadata.run === RUN && info.metadata.suite === 'conformance', 'metadata');
	check(info.state === 'running', `state ${info.state}`);
	check(info.endAt > info.startedAt, 'endAt after startedAt');
	check(info.envdVersion === '0.6.13', `envd ${info.envdVersion}`);
});

await step('isRunning probes envd /health', async () => {
	check(await sbx.isRunning() === true, 'not running');
});

await step('streamed command: stdout chunks, stderr, exit code 0', async () => {
	const chunks = [];
	const errs = [];
	const r = await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.05; done; echo oops >&2',
		{ onStdout: (d) => chunks.push(d), onStderr: (d) => errs.push(d) });
	check(r.exitCode === 0, `exit ${r.exitCode}`);
	check(r.stdout === 'line1\nline2\nline3\n', `stdout ${JSON.stringify(r.stdout)}`);
	check(r.stderr === 'oops\n', `stderr ${JSON.stringify(r.stderr)}`);
	check(chunks.length >= 3, `stdout arrived in ${chunks.length} chunk(s), want one per line`);
	check(chunks.join('') === r.stdout, 'chunks join to stdout');
	check(errs.join('') === 'oops\n', 'stderr callback');
});

await step('command envs, cwd and the sandbox environment', async () => {
	const r = await sbx.commands.run('echo "$FOO:$E2B_SANDBOX:$(pwd)"', { envs: { FOO: 'bar' }, cwd: '/tmp' });
	const [foo, e2bFlag, cwd] = r.stdout.trim().split(':');
	check(foo === 'bar', `env FOO=${foo}`);
	check(e2bFlag === 'true', `E2B_SANDBOX=${e2bFlag}`);
	check(cwd.endsWith('/tmp'), `cwd ${cwd}`);
});

await step('failing command surfaces CommandExitError with its exit code', async () => {
	const e = await expectReject(sbx.commands.run('echo before; exit 7'), CommandExitError, 'exit 7');
	check(e.exitCode === 7, `exitCode ${e.exitCode}`);
	check(e.stdout === 'before\n', `stdout ${JSON.stringify(e.stdout)}`);
});

await step('background command: list, stdin, kill (SIGKILL) ends it with -1', async () => {
	const h = await sbx.commands.run('read line; echo "got $line"; sleep 30', { background: true, stdin: true });
	check(Number.isInteger(h.pid) && h.pid > 0, `pid ${h.pid}`);
	const procs = await sbx.commands.list();
	check(procs.some((p) => p.pid === h.pid && p.cmd === '/bin/bash'), 'process not listed');
	await sbx.commands.sendStdin(h.pid, 'hello\n');
	for (let i = 0; i < 100 && !h.stdout.includes('got hello'); i++)
		await new Promise((r) => setTimeout(r, 20));
	check(h.stdout.includes('got hello'), `stdin did not arrive: ${JSON.stringify(h.stdout)}`);
	check(await h.kill() === true, 'kill returned false');
	const e = await expectReject(h.wait(), CommandExitError, 'killed process');
	check(e.exitCode === -1, `exitCode ${e.exitCode}`);
	check(await sbx.commands.kill(h.pid) === false, 'second kill should report not found');
});

await step('command deadline (timeoutMs) surfaces TimeoutError', async () => {
	await expectReject(sbx.commands.run('sleep 5', { timeoutMs: 300 }), TimeoutError, 'deadline');
});

const text = `hello from ${RUN}\nline two\n`;
await step('files.write then files.read round trip (multipart upload)', async () => {
	const info = await sbx.files.write('/home/user/conf/hello.txt', text);
	check(info.path === '/home/user/conf/hello.txt', `path ${info.path}`);
	check(info.name === 'hello.txt' && info.type === 'file', `info ${JSON.stringify(info)}`);
	const back = await sbx.files.read('/home/user/conf/hello.txt');
	check(back === text, `read back ${JSON.stringify(back)}`);
});

await step('binary round trip, octet-stream + gzip upload, bytes read', async () => {
	const bin = crypto.randomBytes(100000);
	await sbx.files.write('data/blob.bin', bin, { useOctetStream: true, gzip: true });
	const back = await sbx.files.read('/home/user/data/blob.bin', { format: 'bytes', gzip: true });
	check(Buffer.from(back).equals(bin), 'bytes differ');
});

await step('files written through the API are visible to commands', async () => {
	const r = await sbx.commands.run('cat ~/conf/hello.txt');
	check(r.stdout === text, `cat gave ${JSON.stringify(r.stdout)}`);
});

await step('filesystem service: exists, list, makeDir, rename, remove', async () => {
	check(await sbx.files.exists('/home/user/conf/hello.txt') === true, 'exists');
	check(await sbx.files.exists('/home/user/nope') === false, 'not exists');
	const ents = await sbx.files.list('/home/user/conf');
	check(ents.length === 1 && ents[0].name === 'hello.txt' && ents[0].type === 'file', `list ${JSON.stringify(ents)}`);
	check(ents[0].size === text.length, `size ${ents[0].size}`);
	check(await sbx.files.makeDir('/home/user/d1') === true, 'makeDir');
	check(await sbx.files.makeDir('/home/user/d1') === false, 'makeDir again');
	const moved = await sbx.files.rename('/home/user/conf/hello.txt', '/home/user/d1/h.txt');
	check(moved.path === '/home/user/d1/h.txt', `rename ${moved.path}`);
	await sbx.files.remove('/home/user/d1');
	check(await sbx.files.exists('/home/user/d1') === false, 'remove');
});

await step('reading a missing file gives FileNotFoundError', async () => {
	await expectReject(sbx.files.read('/home/user/missing.txt'), FileNotFoundError, 'missing file');
});

await step('paths cannot escape the sandbox root', async () => {
	await expectReject(sbx.files.read('/../../../etc/passwd'), InvalidArgumentError, 'escape read');
	await expectReject(sbx.files.write('../../../../tmp/x', 'x'), InvalidArgumentError, 'escape write');
	const r = await sbx.files.read('/etc/../home/user/data/blob.bin', { format: 'bytes' });
	check(r.length === 100000, 'in-root .. still works');
});

await step('a backgrounded grandchild holding stdout does not hold the end event', async () => {
	const r = await sbx.commands.run('sleep 20 & echo started', { timeoutMs: 10000 });
	check(r.stdout === 'started\n' && r.exitCode === 0, JSON.stringify(r));
});

await step('signed download/upload URLs work without the access token', async () => {
	await sbx.files.write('/home/user/signed.txt', 'signed content');
	// The SDK builds these on the direct envd URL; route them the way the
	// edge proxy would, with the sandbox headers, and send no token.
	const route = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' };
	const dl = new URL(await sbx.downloadUrl('/home/user/signed.txt'));
	check(/^v1_[A-Za-z0-9+/]+$/.test(dl.searchParams.get('signature') ?? ''), `signature ${dl.searchParams.get('signature')}`);
	let r = await fetch(dl, { headers: route });
	check(r.status === 200, `download status ${r.status}`);
	check(await r.text() === 'signed content', 'download body');
	dl.searchParams.set('signature', 'v1_AAAA');
	r = await fetch(dl, { headers: route });
	check(r.status === 401, `tampered signature gave ${r.status}`);
	const expired = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: -5 });
	r = await fetch(expired, { headers: route });
	check(r.status === 401, `expired signature gave ${r.status}`);
	const bare = new URL(dl);
	bare.searchParams.delete('signature');
	r = await fetch(bare, { headers: route });
	check(r.status === 401, `unsigned, tokenless read gave ${r.status}`);
	const up = await sbx.uploadUrl('/home/user/up.txt');
	const fd = new FormData();
	fd.append('file', new Blob(['uploaded']), 'up.txt');
	r = await fetch(up, { method: 'POST', body: fd, headers: route });
	check(r.status === 200, `upload status ${r.status}`);
	check(await sbx.files.read('/home/user/up.txt') === 'uploaded', 'uploaded content');
});

await step('list finds the sandbox by metadata, and a wrong filter does not', async () => {
	const found = await listAll({ metadata: { run: RUN } });
	check(found.length === 1 && found[0].sandboxId === sbx.sandboxId, `found ${found.map((s) => s.sandboxId)}`);
	check(found[0].metadata.suite === 'conformance' && found[0].state === 'running', 'listed fields');
	const none = await listAll({ metadata: { run: RUN, suite: 'other' } });
	check(none.length === 0, 'wrong filter matched');
	// Keys and values with the characters the SDK's triple encoding protects.
	const odd = await listAll({ metadata: { 'odd key': 'a&b=c/ü+%' } });
	check(odd.length === 1 && odd[0].sandboxId === sbx.sandboxId, `odd metadata found ${odd.length}`);
});

await step('list paginates with limit and X-Next-Token', async () => {
	sbx2 = await Sandbox.create('base', { ...CONN, timeoutMs: 60000, metadata: { suite: 'conformance', run: RUN, n: '2' } });
	const pg = Sandbox.list({ ...CONN, query: { metadata: { run: RUN } }, limit: 1 });
	const p1 = await pg.nextItems();
	check(p1.length === 1 && pg.hasNext, 'first page');
	const p2 = await pg.nextItems();
	check(p2.length === 1 && !pg.hasNext, `second page ${p2.length} ${pg.hasNext}`);
	check(p1[0].sandboxId === sbx2.sandboxId && p2[0].sandboxId === sbx.sandboxId, 'newest first');
});

await step('setTimeout moves endAt both ways', async () => {
	const before = (await Sandbox.getInfo(sbx.sandboxId, CONN)).endAt;
	await sbx.setTimeout(600000);
	const later = (await Sandbox.getInfo(sbx.sandboxId, CONN)).endAt;
	check(later > before, `endAt ${before.toISOString()} -> ${later.toISOString()}`);
	await sbx.setTimeout(300000);
	const shorter = (await Sandbox.getInfo(sbx.sandboxId, CONN)).endAt;
	check(shorter < later, 'setTimeout did not shorten');
});

await step('Sandbox.connect re-attaches to a running sandbox', async () => {
	const again = await Sandbox.connect(sbx.sandboxId, CONN);
	const r = await again.commands.run('echo connected');
	check(r.stdout === 'connected\n', 'command after connect');
});

await step('pause keeps files, lists as paused, connect resumes it', async () => {
	check(await sbx.pause() === true, 'pause');
	check(await Sandbox.pause(sbx.sandboxId, CONN) === false, 'second pause is false (409)');
	const paused = await listAll({ metadata: { run: RUN }, state: ['paused'] });
	check(paused.length === 1 && paused[0].sandboxId === sbx.sandboxId && paused[0].state === 'paused', 'paused listing');
	check(await sbx.isRunning() === false, 'envd answers while paused');
	const resumed = await Sandbox.connect(sbx.sandboxId, { ...CONN, timeoutMs: 300000 });
	check((await Sandbox.getInfo(sbx.sandboxId, CONN)).state === 'running', 'state after connect');
	check(await resumed.files.read('/home/user/up.txt') === 'uploaded', 'files survive a pause');
});

await step('getMetrics returns samples', async () => {
	const m = await sbx.getMetrics();
	check(Array.isArray(m) && m.length >= 1 && m[0].cpuCount === 2 && m[0].memTotal > 0, JSON.stringify(m));
});

await step('a wrong API key gives AuthenticationError', async () => {
	await expectReject(Sandbox.getInfo(sbx.sandboxId, { ...CONN, apiKey: 'e2b_zz_not_a_valid_key' }), AuthenticationError, 'bad key');
});

await step('a wrong envd access token is refused', async () => {
	const bad = await Sandbox.connect(sbx.sandboxId, CONN);
	bad.envdAccessToken = 'nope';
	await expectReject(bad.files.list('/home/user'), AuthenticationError, 'bad token');
});

// ---------------------------------------------------------------- faults

await step('fault: rate-limit 429 with retries off -> RateLimitError', async () => {
	await fault({ kind: 'rate_limit', op: 'create', retryAfter: 30 });
	await expectReject(Sandbox.create('base', { ...CONN, retries: 0 }), RateLimitError, 'create under rate limit');
});

await step('fault: rate-limit 429 with Retry-After 1 is retried by the SDK', async () => {
	await admin('DELETE', '/requests');
	await fault({ kind: 'rate_limit', op: 'get', retryAfter: 1 });
	const info = await Sandbox.getInfo(sbx.sandboxId, CONN);
	check(info.sandboxId === sbx.sandboxId, 'get after retry');
	const gets = (await admin('GET', '/requests')).filter((r) => r.op === 'get').map((r) => r.status);
	check(gets.join(',') === '429,200', `statuses ${gets}`);
});

await step('fault: concurrency limit 429 -> RateLimitError naming the limit', async () => {
	const st = await admin('GET', '/state');
	const prev = st.config.maxSandboxes;
	await admin('POST', '/config', { maxSandboxes: st.sandboxes.filter((s) => s.state === 'running').length });
	try {
		const e = await expectReject(Sandbox.create('base', { ...CONN, retries: 0 }), RateLimitError, 'over concurrency');
		check(/concurrent/.test(e.message), e.message);
	} finally {
		await admin('POST', '/config', { maxSandboxes: prev });
	}
});

await step('creation rate limit (token bucket) -> RateLimitError', async () => {
	await admin('POST', '/config', { createRate: 1 });
	const made = [];
	let err = null;
	try {
		for (let i = 0; i < 5 && !err; i++) {
			try {
				made.push(await Sandbox.create('base', { ...CONN, retries: 0, metadata: { run: RUN, rate: '1' } }));
			} catch (e) {
				err = e;
			}
		}
	} finally {
		await admin('POST', '/config', { createRate: 0 });
		for (const m of made)
			await m.kill();
	}
	check(err instanceof RateLimitError, `want RateLimitError, got ${err && err.name}: ${err && err.message}`);
	check(made.length >= 1, 'the first create should pass');
});

await step('fault: 500 on create -> SandboxError with the status', async () => {
	await fault({ kind: 'http_error', op: 'create', status: 500, message: 'boom' });
	const e = await expectReject(Sandbox.create('base', CONN), SandboxError, 'create 500');
	check(e.statusCode === 500 && /boom/.test(e.message), `${e.statusCode} ${e.message}`);
});

await step('fault: envd 502 sandbox-not-found on a command', async () => {
	await fault({ kind: 'sandbox_not_found', op: 'envd:/process.Process/Start', sandboxID: sbx.sandboxId });
	await expectReject(sbx.commands.run('echo x'), SandboxNotFoundError, 'start under 502');
});

await step('fault: envd 502 on a file read -> TimeoutError (sandbox gone)', async () => {
	await fault({ kind: 'sandbox_not_found', op: 'envd:/files', sandboxID: sbx.sandboxId });
	await expectReject(sbx.files.read('/home/user/data/blob.bin'), TimeoutError, 'read under 502');
});

await step('fault: stream cut (TCP reset) without an end message fails the command', async () => {
	await fault({ kind: 'cut_stream', op: 'envd:/process.Process/Start', afterEvents: 2 });
	const e = await expectReject(sbx.commands.run('echo one; sleep 0.2; echo two'), SandboxError, 'cut stream');
	check(/terminated/.test(e.message), e.message);
	const r = await sbx.commands.run('echo still-alive');
	check(r.stdout === 'still-alive\n', 'sandbox unusable after a cut stream');
});

await step('fault: stream ended (clean EOF) without an end message fails the command', async () => {
	await fault({ kind: 'cut_stream', mode: 'eof', op: 'envd:/process.Process/Start', afterEvents: 2 });
	const e = await expectReject(sbx.commands.run('echo one; sleep 0.2; echo two'), SandboxError, 'eof stream');
	check(/EndStreamResponse/.test(e.message), e.message);
});

await step('fault: garbage envelope -> the SDK rejects the stream', async () => {
	await fault({ kind: 'garbage_stream', variant: 'bad_json', op: 'envd:/process.Process/Start' });
	await expectReject(sbx.commands.run('echo x'), InvalidArgumentError, 'bad json envelope');
});

await step('fault: deadline_exceeded end-of-stream -> TimeoutError', async () => {
	await fault({ kind: 'deadline_exceeded', op: 'envd:/process.Process/Start' });
	await expectReject(sbx.commands.run('sleep 2'), TimeoutError, 'deadline fault');
});

await step('fault: rpc resource_exhausted -> RateLimitError', async () => {
	await fault({ kind: 'rpc_error', op: 'envd:/filesystem.Filesystem/ListDir', code: 'resource_exhausted', message: 'slow down' });
	await expectReject(sbx.files.list('/home/user'), RateLimitError, 'listdir exhausted');
});

await step('expiry: a sandbox past its end time is killed and gone', async () => {
	const short = await Sandbox.create('base', { ...CONN, timeoutMs: 1000, metadata: { run: RUN, short: '1' } });
	let gone = false;
	for (let i = 0; i < 60 && !gone; i++) {
		await new Promise((r) => setTimeout(r, 100));
		gone = !(await admin('GET', '/state')).sandboxes.some((s) => s.sandboxID === short.sandboxId);
	}
	check(gone, 'sandbox still there 6 s after a 1 s timeout');
	await expectReject(Sandbox.getInfo(short.sandboxId, CONN), SandboxNotFoundError, 'getInfo after expiry');
	check(await short.isRunning() === false, 'isRunning after expiry');
	await expectReject(short.commands.run('true'), SandboxNotFoundError, 'command after expiry');
});

await step('a sandbox killed under a running command: the SDK reports it gone (TimeoutError)', async () => {
	const v = await Sandbox.create('base', { ...CONN, timeoutMs: 60000, metadata: { run: RUN, victim: '1' } });
	const h = await v.commands.run('echo started; sleep 30', { background: true });
	for (let i = 0; i < 100 && !h.stdout.includes('started'); i++)
		await new Promise((r) => setTimeout(r, 20));
	check(await Sandbox.kill(v.sandboxId, CONN) === true, 'kill');
	const e = await expectReject(h.wait(), TimeoutError, 'command of a killed sandbox');
	check(/killed or reached its end of life/.test(e.message), e.message);
});

await step('expiry switch: /_emulator/sandboxes/{id}/expire', async () => {
	await admin('POST', `/sandboxes/${sbx2.sandboxId}/expire`);
	await expectReject(Sandbox.getInfo(sbx2.sandboxId, CONN), SandboxNotFoundError, 'getInfo after forced expiry');
});

await step('kill: the sandbox is gone from list and get, a second kill is false', async () => {
	check(await sbx.kill() === true, 'kill');
	const left = await listAll({ metadata: { run: RUN } });
	check(left.length === 0, `still listed: ${left.map((s) => s.sandboxId)}`);
	await expectReject(Sandbox.getInfo(sbx.sandboxId, CONN), SandboxNotFoundError, 'getInfo after kill');
	check(await Sandbox.kill(sbx.sandboxId, CONN) === false, 'second kill');
	await expectReject(sbx.files.read('/home/user/data/blob.bin'), TimeoutError, 'envd after kill');
});

await step('no connection left loopback', async () => {
	check(violations.length === 0, `refused connections to: ${[...new Set(violations)].join(', ')}`);
	const reqs = await admin('GET', '/requests');
	check(reqs.length > 0, 'emulator saw no requests');
});

console.log(`sdk-conformance: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
