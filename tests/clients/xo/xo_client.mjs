// Drives Xen Orchestra's `xen-api` client against xcp-httpd the way XO's server does, one
// step per argument; prints one JSON line per step for the Python test to check.
// usage: node xo_client.mjs URL PASSWORD WORKDIR
import { createClient } from 'xen-api'
import { createReadStream, createWriteStream, statSync } from 'node:fs'
import { pipeline } from 'node:stream/promises'

const [url, password, workdir] = process.argv.slice(2)
const out = (step, data) => console.log(JSON.stringify({ step, ...data }))
const xapi = createClient({ url, allowUnauthorized: true, auth: { user: 'root', password } })

const byType = type => Object.values(xapi.objects.all).filter(o => o.$type === type)

try {
  await xapi.connect()
  out('connect', { status: xapi.status })

  await xapi.objectsFetched
  out('objects', { VM: byType('VM').length, host: byType('host').length, SR: byType('SR').length,
                   pool: byType('pool').length })

  // a new VM must reach the client as an event (XO's objects.on('add'))
  const template = byType('VM').find(vm => vm.is_a_template && vm.name_label === 'Debian Etch 4.0')
  const seen = new Promise(resolve => xapi.objects.on('add', objects => {
    for (const o of Object.values(objects)) if (o.$type === 'VM' && o.name_label === 'xo-clone') resolve(o)
  }))
  const cloneRef = await xapi.call('VM.clone', template.$ref, 'xo-clone')
  const clone = await seen
  out('event', { ref: clone.$ref, expected: cloneRef, is_a_template: clone.is_a_template })

  // statistics the way XO's xapi-stats polls them
  const host = byType('host')[0]
  const servertime = await xapi.call('host.get_servertime', host.$ref)
  const now = Math.floor(Date.parse(servertime.replace(/^(\d{4})(\d\d)(\d\d)T/, '$1-$2-$3T')) / 1000)
  const resp = await xapi.getResource('/rrd_updates', {
    host, query: { cf: 'AVERAGE', host: 'true', interval: 5, json: 'true', start: now - 600 },
  })
  const stats = JSON.parse(await resp.body.text())
  out('stats', { meta_step: stats.meta.step, columns: Number(stats.meta.columns),
                 legend: stats.meta.legend.length, rows: stats.data.length })

  // full backup and restore of the demo VM: getResource('/export/'), putResource('/import/')
  const demo = byType('VM').find(vm => vm.name_label === 'demo' && !vm.is_a_template)
  const exp = await xapi.getResource('/export/', { query: { ref: demo.$ref, use_compression: 'true' } })
  const file = `${workdir}/xo-export.xva`
  await pipeline(exp.body, createWriteStream(file))
  const sr = byType('pool')[0].default_SR
  // a stream without a length: XO declares 1 PiB and cuts the socket once the data is sent
  const result = await xapi.putResource(createReadStream(file), '/import/', { query: { sr_id: sr } })
  out('transfer', { source: demo.$ref, bytes: statSync(file).size, result: String(result) })
} catch (error) {
  out('error', { message: String(error?.stack ?? error), code: error?.code, params: error?.params })
}
await xapi.disconnect()
process.exit(0)
