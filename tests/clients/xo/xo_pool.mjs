// Xen Orchestra's `xen-api` client pointed at a pool's slave: it must follow HOST_IS_SLAVE
// to the master, see the whole pool, and fetch an export of a VM whose disk is on a slave
// (the master answers 302 to that host). Prints one JSON line.
// usage: node xo_pool.mjs SLAVE_URL PASSWORD VM_REF
import { createClient } from 'xen-api'

const [url, password, vmRef] = process.argv.slice(2)
const xapi = createClient({ url, allowUnauthorized: true, auth: { user: 'root', password } })
const facts = {}
try {
  await xapi.connect()
  await xapi.objectsFetched
  const all = Object.values(xapi.objects.all)
  const pool = all.find(o => o.$type === 'pool')
  facts.status = xapi.status
  facts.hosts = all.filter(o => o.$type === 'host').map(h => h.address).sort()
  facts.master = xapi.getObject(pool.master).address
  facts.connected_to = String(xapi._url?.hostname ?? '')
  const exp = await xapi.getResource('/export/', { query: { ref: vmRef } })
  facts.export_bytes = (await exp.body.arrayBuffer()).byteLength
} catch (error) {
  facts.error = String(error?.stack ?? error)
}
console.log(JSON.stringify(facts))
await xapi.disconnect()
process.exit(0)
