// One E2B behaviour at a time, with the unmodified npm `e2b` package: `node compat.mjs <scenario>`.
//
// Needs only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY (as `wakeproxy up` prints them).
// Prints one JSON object: every check with what was wanted and what came back, plus `ok`.
// Exits 0 when every check passed, 1 when one did not, 2 on an unexpected error.

import { Sandbox } from 'e2b'

const checks = []
const results = { checks }

function check(name, got, want, passed = got === want) {
  checks.push({ name, ok: passed, got, want })
  return passed
}

async function errorName(promise) {
  try {
    await promise
    return 'no error'
  } catch (err) {
    return err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)
  }
}

const scenarios = {
  // A paused sandbox with auto-resume off is not running, as on E2B.
  async 'is-running'(sandbox) {
    check('running after create', await sandbox.isRunning(), true)
    check('pause', await sandbox.pause(), true)
    check('isRunning while paused', await sandbox.isRunning(), false)
    check('state stays paused', (await sandbox.getInfo()).state, 'paused')
  },

  // /proc files have st_size 0; a killed sandbox ends a running command's stream.
  async 'proc-and-kill'(sandbox) {
    const meminfo = await sandbox.files.read('/proc/meminfo')
    check('files.read(/proc/meminfo) has MemTotal', meminfo.includes('MemTotal:'), true)
    const handle = await sandbox.commands.run('sleep 600', { background: true, timeoutMs: 0 })
    const waited = handle.wait().then(
      () => 'no error',
      (err) => `${err.constructor.name}: ${err.message}`,
    )
    await Sandbox.kill(sandbox.sandboxId)
    const got = await waited
    check('wait() on a command of a killed sandbox', got,
      'TimeoutError: … The sandbox was killed …',
      got.startsWith('TimeoutError') && /sandbox was killed|sandbox timeout/i.test(got))
    return true
  },

  // download_url()/upload_url() of a secure sandbox on the proxy's base host.
  async 'signed-urls'(sandbox) {
    await sandbox.files.write('/home/user/signed.txt', 'read through a signed URL')
    const url = await sandbox.downloadUrl('/home/user/signed.txt')
    check('download URL names no sandbox', url.includes(sandbox.sandboxId), false)
    const got = await fetch(url)
    check('signed download', `${got.status} ${await got.text()}`, '200 read through a signed URL')
    const upload = await sandbox.uploadUrl('/home/user/uploaded.txt', {
      useSignatureExpiration: 120,
    })
    const form = new FormData()
    form.append('file', new Blob(['sent by a browser']), 'u.txt')
    const sent = await fetch(upload, { method: 'POST', body: form })
    check('signed upload', sent.status, 200)
    check('uploaded content', await sandbox.files.read('/home/user/uploaded.txt'),
      'sent by a browser')
    const expired = await sandbox.downloadUrl('/home/user/signed.txt', {
      useSignatureExpiration: -60,
    })
    check('expired signature', (await fetch(expired)).status, 401)
    const tampered = url.replace('signed.txt', 'other.txt')
    check('tampered signature', (await fetch(tampered)).status, 401)
  },

  // envd 0.6.2: metadata on writes, reported by getInfo, list and rename, cleared by a rewrite.
  async metadata(sandbox) {
    const tags = { author: 'mish', purpose: 'upload' }
    const same = (got) => JSON.stringify(got ?? null)
    const written = await sandbox.files.write('meta.txt', 'x', { metadata: tags })
    check('write returns the metadata', same(written.metadata), same(tags))
    check('getInfo', same((await sandbox.files.getInfo('meta.txt')).metadata), same(tags))
    const listed = (await sandbox.files.list('/home/user')).find((e) => e.name === 'meta.txt')
    check('list', same(listed?.metadata), same(tags))
    const moved = await sandbox.files.rename('meta.txt', 'renamed.txt')
    check('rename', same(moved.metadata), same(tags))
    const again = await sandbox.files.write('renamed.txt', 'again')
    check('a rewrite without metadata clears it', same(again.metadata), 'null')
    check('getInfo after the rewrite',
      same((await sandbox.files.getInfo('renamed.txt')).metadata), 'null')
  },

  // watchDir: events of a write, a rename and a removal, recursively; a missing directory.
  async watch(sandbox) {
    await sandbox.files.makeDir('watched/nested')
    const seen = []
    let wake
    const handle = await sandbox.files.watchDir('watched', (event) => {
      seen.push(`${event.type} ${event.name}`)
      if (wake) wake()
    }, { recursive: true, includeEntry: true })
    const until = async (wanted) => {
      const deadline = Date.now() + 60_000
      while (!seen.includes(wanted) && Date.now() < deadline) {
        await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 1_000) })
      }
      return seen.includes(wanted)
    }
    await sandbox.files.write('watched/nested/a.txt', 'x')
    check('write', await until('write nested/a.txt'), true)
    await sandbox.files.rename('watched/nested/a.txt', 'watched/b.txt')
    check('rename', await until('rename nested/a.txt'), true)
    check('moved in', await until('create b.txt'), true)
    await sandbox.files.remove('watched/b.txt')
    check('remove', await until('remove b.txt'), true)
    check('first event', seen[0], 'create nested/a.txt')
    await handle.stop()
    const missing = await errorName(sandbox.files.watchDir('no-such-directory', () => {}))
    check('missing directory', missing.split(':')[0], 'FileNotFoundError')
  },
}

async function main() {
  const name = process.argv[2]
  const scenario = scenarios[name]
  if (!scenario) throw new Error(`unknown scenario ${name}; one of ${Object.keys(scenarios)}`)
  for (const variable of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
    if (!process.env[variable]) throw new Error(`${variable} is not set`)
  }
  const sandbox = await Sandbox.create({
    secure: true,
    lifecycle: { onTimeout: 'pause', autoResume: false },
    timeoutMs: 300_000,
  })
  results.sandboxId = sandbox.sandboxId
  let killed = false
  try {
    killed = (await scenario(sandbox)) === true
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
