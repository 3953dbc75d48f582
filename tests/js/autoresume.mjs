// AutoResume through wakeproxy with the unmodified npm `e2b` package.
//
// Needs only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY (as `wakeproxy up` prints them).
// Prints one JSON object: every check with what was wanted and what came back, plus
// `ok`. Exits 0 when every check passed, 1 when one did not, 2 on an unexpected error.

import http from 'node:http'
import { NotFoundError, Sandbox } from 'e2b'

const APP = `
from http.server import BaseHTTPRequestHandler, HTTPServer


class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from a sandbox woken by the JS SDK test"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("0.0.0.0", 3000), Page).serve_forever()
`
const PAGE = 'hello from a sandbox woken by the JS SDK test'

const checks = []
const results = { checks }

function check(name, got, want, passed = got === want) {
  checks.push({ name, ok: passed, got, want })
  return passed
}

// GET `path` from the proxy at E2B_SANDBOX_URL, addressed to `host` by the Host header
// (the preview URL `http://<port>-<id>.<domain>/` without relying on DNS for it).
function getViaProxy(host, path = '/', timeoutMs = 60_000) {
  const proxy = new URL(process.env.E2B_SANDBOX_URL)
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: proxy.hostname,
        port: proxy.port || 80,
        path,
        method: 'GET',
        headers: { Host: host, Accept: 'text/plain' },
        timeout: timeoutMs,
      },
      (response) => {
        const chunks = []
        response.on('data', (chunk) => chunks.push(chunk))
        response.on('end', () =>
          resolve({ status: response.statusCode, body: Buffer.concat(chunks).toString() }),
        )
        response.on('error', reject)
      },
    )
    request.on('timeout', () => request.destroy(new Error(`no answer from ${host} in ${timeoutMs} ms`)))
    request.on('error', reject)
    request.end()
  })
}

async function untilServing(host, deadlineMs) {
  const deadline = Date.now() + deadlineMs
  let last
  while (Date.now() < deadline) {
    try {
      last = await getViaProxy(host, '/', 5_000)
      if (last.status === 200) return last
    } catch (err) {
      last = { error: String(err) }
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return last
}

async function main() {
  for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
    if (!process.env[name]) throw new Error(`${name} is not set`)
  }

  const sandbox = await Sandbox.create({
    lifecycle: { onTimeout: 'pause', autoResume: true },
    timeoutMs: 300_000,
  })
  results.sandboxId = sandbox.sandboxId
  let killed = false
  try {
    const info = await sandbox.getInfo()
    check('lifecycle after create', JSON.stringify(info.lifecycle),
      JSON.stringify({ onTimeout: 'pause', autoResume: true }))

    await sandbox.files.write('/home/user/note.txt', 'kept across a pause')
    const several = await sandbox.files.write([
      { path: '/home/user/many/a.txt', data: 'A' },
      { path: 'many/b.txt', data: 'B' },
    ])
    check('files.write of several files', JSON.stringify(several.map((f) => f.path)),
      JSON.stringify(['/home/user/many/a.txt', '/home/user/many/b.txt']))
    const sum = await sandbox.commands.run('python3 -c "print(2 + 2)"')
    check('commands.run stdout', sum.stdout.trim(), '4')
    check('commands.run exit code', sum.exitCode, 0)

    check('pause', await sandbox.pause(), true)
    check('state after pause', (await sandbox.getInfo()).state, 'paused')
    check('files.read after pause', await sandbox.files.read('/home/user/note.txt'),
      'kept across a pause')
    check('state after files.read', (await sandbox.getInfo()).state, 'running')

    const host = sandbox.getHost(3000)
    const proxyPort = new URL(process.env.E2B_SANDBOX_URL).port
    check('getHost(3000)', host, `3000-${sandbox.sandboxId}.localhost:${proxyPort}`)

    await sandbox.files.write('/home/user/app.py', APP)
    const server = await sandbox.commands.run('python3 /home/user/app.py', {
      background: true,
      timeoutMs: 0,
    })
    results.serverPid = server.pid
    const served = await untilServing(host, 30_000)
    check('preview before pause', served?.body, PAGE)

    check('pause with a server running', await sandbox.pause(), true)
    check('state before the preview request', (await sandbox.getInfo()).state, 'paused')
    const woken = await getViaProxy(host)
    check('preview status after pause', woken.status, 200)
    check('preview body after pause', woken.body, PAGE)
    check('state after the preview request', (await sandbox.getInfo()).state, 'running')
    const again = await sandbox.commands.run('python3 -c "print(2 + 2)"')
    check('commands.run stdout after wake', again.stdout.trim(), '4')

    const listed = await Sandbox.list().nextItems()
    const mine = listed.find((item) => item.sandboxId === sandbox.sandboxId)
    check('Sandbox.list shows it', mine?.state, 'running')

    check('kill', await sandbox.kill(), true)
    killed = true
    let refused
    try {
      await Sandbox.connect(sandbox.sandboxId)
      refused = 'connected'
    } catch (err) {
      refused = err
    }
    const name = refused instanceof Error ? refused.name : String(refused)
    check('connect after kill rejects', name, 'SandboxNotFoundError',
      refused instanceof NotFoundError && name === 'SandboxNotFoundError')
    const gone = await getViaProxy(host)
    check('preview after kill', gone.status, 502)
    check('preview after kill says not found', gone.body.includes('The sandbox was not found'), true)
  } finally {
    if (!killed) await Sandbox.kill(sandbox.sandboxId).catch(() => undefined)
  }
}

try {
  await main()
  results.ok = checks.length > 0 && checks.every((c) => c.ok)
  console.log(JSON.stringify(results, null, 2))
  process.exit(results.ok ? 0 : 1)
} catch (err) {
  results.ok = false
  results.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
  results.stack = err instanceof Error ? err.stack : undefined
  console.log(JSON.stringify(results, null, 2))
  process.exit(2)
}
