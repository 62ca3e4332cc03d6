// The dashboard's script (README, "Dashboard"): one module, no framework, no build step. The page follows
// the bridge over Server-Sent Events (GET /api/v1/events) and acts through the HTTP API. With SERVICE_API_KEY
// set, every fetch carries X-API-Key, and the stream opens with a one-time ticket from
// POST /api/v1/events/token, so the key itself never appears in a URL.

const KEY_STORE = 'pico-a1111-bridge.api-key'
const FIRST_RETRY_MS = 1000
const LAST_RETRY_MS = 30_000
const ACTIVE = new Set(['queued', 'generating', 'sending'])

const $ = (selector, root = document) => root.querySelector(selector)
const cards = new Map()
let apiKey = localStorage.getItem(KEY_STORE) ?? ''
let panel = null
let source = null
let retryMs = FIRST_RETRY_MS
let retryTimer = 0

class KeyRefused extends Error {}

async function api(path, { method = 'GET', json } = {}) {
  const headers = {}
  if (apiKey) headers['x-api-key'] = apiKey
  let body
  if (json !== undefined) {
    headers['content-type'] = 'application/json'
    body = JSON.stringify(json)
  }
  const response = await fetch(path, { method, headers, body, cache: 'no-store' })
  if (response.status === 401) throw new KeyRefused()
  return response
}

async function errorText(response) {
  try {
    const { error } = await response.json()
    return `${error.message} (${error.code})`
  } catch {
    return `HTTP ${response.status}`
  }
}

function setLive(text) {
  $('#live').textContent = text
}

// --- the event stream --------------------------------------------------------------------------------

async function connect() {
  clearTimeout(retryTimer)
  source?.close()
  setLive('connecting…')
  let token
  try {
    const response = await api('/api/v1/events/token', { method: 'POST' })
    if (!response.ok) throw new Error(await errorText(response))
    token = (await response.json()).token
  } catch (err) {
    if (err instanceof KeyRefused) return askForKey(apiKey ? 'The bridge refused this key.' : '')
    return reconnectLater()
  }
  source = new EventSource(`/api/v1/events?token=${encodeURIComponent(token)}`)
  source.addEventListener('open', () => {
    retryMs = FIRST_RETRY_MS
    setLive('live')
  })
  // A ticket is good for one stream only, so the browser's own reconnect would be refused: every
  // reconnect fetches a new ticket, with a growing pause.
  source.addEventListener('error', () => {
    source.close()
    reconnectLater()
  })
  const on = (name, handle) => source.addEventListener(name, (e) => handle(JSON.parse(e.data)))
  on('snapshot', showSnapshot)
  on('status', (device) => updateDevice(device))
  on('devices', (devices) => showDevices(devices))
  on('frame', ({ device }) => {
    const card = cards.get(device)
    if (card?.device.status && ACTIVE.has(card.device.status.state)) void loadPicture(card, 'preview')
  })
  on('queue', showQueue)
  on('generators', showGenerators)
}

function reconnectLater() {
  setLive(`not connected; trying again in ${Math.round(retryMs / 1000)} s`)
  retryTimer = setTimeout(connect, retryMs)
  retryMs = Math.min(retryMs * 2, LAST_RETRY_MS)
}

// --- the key -----------------------------------------------------------------------------------------

function askForKey(message) {
  source?.close()
  setLive('an API key is needed')
  $('#main').hidden = true
  $('#key-form').hidden = false
  $('#key-error').textContent = message
  $('#key').focus()
}

$('#key-form').addEventListener('submit', (e) => {
  e.preventDefault()
  apiKey = $('#key').value.trim()
  localStorage.setItem(KEY_STORE, apiKey)
  $('#key-form').hidden = true
  void connect()
})

$('#forget-key').addEventListener('click', () => {
  localStorage.removeItem(KEY_STORE)
  apiKey = ''
  askForKey('')
})

// --- what the stream tells -----------------------------------------------------------------------------

function showSnapshot(snapshot) {
  panel = snapshot.panel
  $('#key-form').hidden = true
  $('#main').hidden = false
  $('#forget-key').hidden = !apiKey
  showDevices(snapshot.devices, true)
  showQueue(snapshot.queue)
  showGenerators(snapshot.generators)
}

function showDevices(devices, complete = false) {
  const ids = new Set(devices.map((d) => d.id))
  if (complete) {
    for (const [id, card] of cards) {
      if (!ids.has(id)) {
        card.root.remove()
        cards.delete(id)
      }
    }
  }
  for (const device of devices) updateDevice(device)
}

function updateDevice(update) {
  const card = cards.get(update.id) ?? addCard(update.id)
  const before = card.device.frame_id
  card.device = { ...card.device, ...update }
  const d = card.device
  const status = d.status
  const conn = d.connected === undefined ? '' : d.connected ? 'connected' : 'not connected'
  const seen = d.last_seen ? `, last heard ${new Date(d.last_seen).toLocaleTimeString()}` : ''
  card.connection.textContent = conn + seen
  card.connection.className = `connection ${d.connected ? 'on' : 'off'}`
  card.state.textContent = describe(status)
  card.root.dataset.state = status?.state ?? 'idle'
  const generating = status?.state === 'generating'
  card.progress.hidden = !generating
  card.progress.value = generating ? (status.progress ?? 0) : 0
  card.progress.setAttribute('aria-label', `progress of ${d.id}`)
  card.error.hidden = !d.last_error
  if (d.last_error)
    card.error.textContent = `Last error: ${d.last_error.error?.message ?? ''} (${d.last_error.error?.code ?? ''})`
  card.about.textContent = aboutPanel(d)
  card.again.disabled = !(card.lastSent || d.prompt)
  card.cancel.disabled = !(status && ACTIVE.has(status.state))
  const frameId = status?.state === 'done' ? status.frame_id : d.frame_id
  if (frameId !== null && frameId !== undefined && (frameId !== before || card.shown !== frameId))
    void loadPicture(card, 'frame', frameId)
  $('#no-devices').hidden = cards.size > 0
}

function describe(status) {
  if (!status) return 'idle'
  switch (status.state) {
    case 'queued':
      return `queued, position ${status.position}`
    case 'generating': {
      const parts = ['generating']
      if (status.progress !== undefined) parts.push(`${Math.round(status.progress * 100)} %`)
      if (status.eta_s !== undefined) parts.push(`about ${Math.ceil(status.eta_s)} s left`)
      return parts.join(', ')
    }
    case 'sending':
      return `sending frame ${status.frame_id} (${status.chunks} bands)`
    case 'done':
      return `done: frame ${status.frame_id}, seed ${status.seed}`
    case 'cancelled':
      return `cancelled (${status.reason})`
    case 'error':
      return `failed: ${status.error?.message ?? ''}`
    default:
      return status.state
  }
}

function aboutPanel(d) {
  const parts = []
  const p = d.panel ?? panel
  if (p) parts.push(`panel ${p.width}×${p.height} ${p.format}`)
  // What the display's last info said (GET /api/v1/devices, `telemetry`); a field it did not send is null.
  const t = d.telemetry ?? {}
  if (t.fw != null) parts.push(`firmware ${t.fw}`)
  if (t.rssi != null) parts.push(`Wi-Fi ${t.rssi} dBm`)
  if (t.heap_free != null) parts.push(`${Math.round(t.heap_free / 1024)} KiB free`)
  if (t.battery_v != null) parts.push(`battery ${t.battery_v} V`)
  if (d.prompt) parts.push(`last prompt: “${d.prompt}”`)
  return parts.join(' · ')
}

async function loadPicture(card, kind, frameId) {
  const id = card.device.id
  const path = `/api/v1/devices/${encodeURIComponent(id)}/${kind}.png`
  // Only the picture asked for last is shown: a preview still on its way must not cover the final frame.
  const ticket = ++card.pictureTicket
  // Asked for once: a frame load that a preview overtook is not asked for again while the job runs.
  if (kind === 'frame') card.shown = frameId
  try {
    const response = await api(path)
    if (!response.ok) {
      if (kind === 'frame') card.shown = null
      return
    }
    const blob = await response.blob()
    if (ticket !== card.pictureTicket) return
    const url = URL.createObjectURL(blob)
    const img = card.picture
    await new Promise((resolve) => {
      img.addEventListener('load', resolve, { once: true })
      img.addEventListener('error', resolve, { once: true })
      if (img.src) URL.revokeObjectURL(img.src)
      img.src = url
    })
    img.hidden = false
    card.noPicture.hidden = true
    img.alt = kind === 'preview' ? `preview of the picture being made for ${id}` : `last picture on ${id}`
    img.dataset.kind = kind
    // The frame id the picture is (a preview's is the newest one the bridge holds when asked).
    img.dataset.frameId = response.headers.get('x-frame-id') ?? String(frameId)
  } catch (err) {
    if (kind === 'frame') card.shown = null
    if (err instanceof KeyRefused) askForKey('The bridge refused this key.')
  }
}

function showQueue(items) {
  const list = $('#queue')
  list.replaceChildren(
    ...items.map((item) => {
      const li = document.createElement('li')
      const where = item.state === 'queued' ? `position ${item.position}` : item.state
      li.textContent = `${item.device ?? 'HTTP client'}: ${where} (job ${item.job})`
      li.dataset.job = item.job
      return li
    }),
  )
  $('#queue-empty').hidden = items.length > 0
}

function showGenerators(generators) {
  $('#generators').replaceChildren(
    ...generators.map((g) => {
      const li = document.createElement('li')
      const times =
        g.recentMs.length > 0
          ? `; recent: ${g.recentMs.map((ms) => `${(ms / 1000).toFixed(1)} s`).join(', ')}`
          : ''
      const err = g.lastError ? `; ${g.lastError.message}` : ''
      li.textContent = `${g.id}: ${g.state}${times}${err}`
      li.className = `generator ${g.state}`
      return li
    }),
  )
}

// --- a display's card ------------------------------------------------------------------------------------

function addCard(id) {
  const root = $('#card-template').content.firstElementChild.cloneNode(true)
  root.dataset.device = id
  const card = {
    root,
    device: { id },
    lastSent: null,
    shown: null,
    pictureTicket: 0,
    picture: $('.picture', root),
    noPicture: $('.no-picture', root),
    connection: $('.connection', root),
    state: $('.state', root),
    progress: $('.progress', root),
    error: $('.error', root),
    about: $('.about', root),
    again: $('.again', root),
    cancel: $('.cancel', root),
    message: $('.form-message', root),
  }
  $('.name', root).textContent = id
  if (panel) {
    card.picture.width = panel.width
    card.picture.height = panel.height
  }
  const form = $('.prompt-form', root)
  form.setAttribute('aria-label', `prompt for ${id}`)
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    void sendPrompt(card, readForm(form))
  })
  card.again.addEventListener('click', () => {
    // Again means the picture on the display: its prompt, with this page's advanced fields if it sent it.
    const shown = card.device.prompt
    const base = !shown || card.lastSent?.prompt === shown ? card.lastSent : { prompt: shown }
    void sendPrompt(card, { ...base, seed: -1 })
  })
  card.cancel.addEventListener('click', () => void cancelJob(card))
  const after = [...cards.keys()].sort().find((other) => other > id)
  $('#devices').insertBefore(root, after ? cards.get(after).root : null)
  cards.set(id, card)
  return card
}

function readForm(form) {
  const data = new FormData(form)
  const body = { prompt: String(data.get('prompt') ?? '').trim() }
  const negative = String(data.get('negative_prompt') ?? '').trim()
  if (negative) body.negative_prompt = negative
  for (const name of ['seed', 'steps']) {
    const value = String(data.get(name) ?? '').trim()
    if (value !== '') body[name] = Number(value)
  }
  if (data.get('fit')) body.fit = String(data.get('fit'))
  if (data.get('preview')) body.preview = true
  return body
}

async function sendPrompt(card, body) {
  card.message.textContent = 'sending…'
  try {
    const response = await api(`/api/v1/devices/${encodeURIComponent(card.device.id)}/prompt`, {
      method: 'POST',
      json: body,
    })
    if (!response.ok) {
      card.message.textContent = `Not queued: ${await errorText(response)}`
      return
    }
    const { job } = await response.json()
    card.lastSent = body
    card.again.disabled = false
    card.message.textContent = `queued as job ${job}`
  } catch (err) {
    if (err instanceof KeyRefused) return askForKey('The bridge refused this key.')
    card.message.textContent = 'The bridge could not be reached.'
  }
}

async function cancelJob(card) {
  const job = card.device.status?.job
  if (!job) return
  try {
    const response = await api(`/api/v1/jobs/${encodeURIComponent(job)}`, { method: 'DELETE' })
    card.message.textContent = response.ok ? `job ${job} cancelled` : await errorText(response)
  } catch (err) {
    if (err instanceof KeyRefused) return askForKey('The bridge refused this key.')
    card.message.textContent = 'The bridge could not be reached.'
  }
}

void connect()
