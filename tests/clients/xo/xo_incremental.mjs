// Xen Orchestra's incremental backup, done with its client as XO's backup code does it (no NBD,
// no CBT): snapshot, export each VDI as a VHD (`base=` the previous snapshot's VDI for a
// delta), restore by PUT /import_raw_vdi?format=vhd into a VDI. One phase per run:
//   node xo_incremental.mjs URL PASSWORD full VM_NAME          -> {snapshot, vdi, target}
//   node xo_incremental.mjs URL PASSWORD delta VM_NAME BASE TARGET -> {snapshot, vdi, bytes}
import { createClient } from 'xen-api'

const [url, password, phase, vmName, baseVdi, targetVdi] = process.argv.slice(2)
const xapi = createClient({ url, allowUnauthorized: true, auth: { user: 'root', password } })
const out = data => console.log(JSON.stringify({ phase, ...data }))

async function snapshotDisk () {
  const [vm] = await xapi.call('VM.get_by_name_label', vmName)
  const snapshot = await xapi.call('VM.snapshot', vm, `${vmName} backup ${phase}`)
  for (const vbd of await xapi.call('VM.get_VBDs', snapshot)) {
    if ((await xapi.call('VBD.get_type', vbd)) === 'Disk') {
      return { snapshot, vdi: await xapi.call('VBD.get_VDI', vbd) }
    }
  }
  throw new Error('the snapshot has no disk')
}

async function exportVhd (vdi, base) {
  const query = { vdi, format: 'vhd' }
  if (base !== undefined) query.base = base
  const resp = await xapi.getResource('/export_raw_vdi/', { query })
  return Buffer.from(await resp.body.arrayBuffer())
}

try {
  await xapi.connect()
  const { snapshot, vdi } = await snapshotDisk()
  if (phase === 'full') {
    const vhd = await exportVhd(vdi)
    const size = await xapi.call('VDI.get_virtual_size', vdi)
    const sr = await xapi.call('VDI.get_SR', vdi)
    const target = await xapi.call('VDI.create', {
      name_label: 'restored', SR: sr, virtual_size: String(size), type: 'user',
      sharable: false, read_only: false, other_config: {},
    })
    await xapi.putResource(vhd, '/import_raw_vdi/', { query: { vdi: target, format: 'vhd' } })
    out({ snapshot, vdi, target, bytes: vhd.length })
  } else {
    const delta = await exportVhd(vdi, baseVdi)
    await xapi.putResource(delta, '/import_raw_vdi/', { query: { vdi: targetVdi, format: 'vhd' } })
    out({ snapshot, vdi, bytes: delta.length })
  }
} catch (error) {
  out({ error: String(error?.stack ?? error), code: error?.code })
}
await xapi.disconnect()
process.exit(0)
