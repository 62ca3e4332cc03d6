/// <reference lib="dom" />
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { type Browser, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'

/*
 * The dashboard (README, "Dashboard") in a real browser: Debian's chromium driven by playwright-core, which
 * downloads no browser of its own. The page is used as a person would (labels, buttons, the keyboard), and
 * what it shows is checked against what the MQTT displays received.
 */

const CHROMIUM = '/usr/bin/chromium'
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
]
/** Screenshots land here (ignored by git); UPDATE_DOCS_SCREENSHOT=1 also refreshes docs/dashboard.png. */
const SHOTS = 'test/browser/screenshots'

let browser: Browser

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error('chromium is not installed: apt-get install chromium')
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
  await mkdir(SHOTS, { recursive: true })
})

afterAll(async () => {
  await browser?.close()
})

/** RGBA as the page's canvas reads the shown <img>, next to the display's RGB565 frame expanded. */
async function shownPixels(page: Page, device: string): Promise<number[]> {
  return page.evaluate((id) => {
    const img = document.querySelector<HTMLImageElement>(`[data-device="${id}"] img.picture`)!
    const canvas = document.createElement('canvas')
    canvas.width = img.naturalWidth
    canvas.height = img.naturalHeight
    const ctx = canvas.getContext('2d')!
    ctx.drawImage(img, 0, 0)
    return [...ctx.getImageData(0, 0, canvas.width, canvas.height).data]
  }, device)
}

function expectSamePicture(rgba: number[], frame: { width: number; height: number; pixels: Buffer }): void {
  expect(rgba.length).toBe(frame.width * frame.height * 4)
  let worst = 0
  for (let p = 0; p < frame.width * frame.height; p++) {
    const word = frame.pixels.readUInt16BE(p * 2)
    const rgb = [((word >>> 11) * 255) / 31, (((word >>> 5) & 0x3f) * 255) / 63, ((word & 0x1f) * 255) / 31]
    for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(rgba[p * 4 + c]! - rgb[c]!))
  }
  // 5 and 6 bits widen to 8 by rounding or by bit replication; both stay within 4 of the exact value.
  expect(worst).toBeLessThanOrEqual(4)
}

/** What a card showed at one moment: its state, the status line, and the progress bar (null when hidden). */
interface CardLook {
  state: string
  text: string
  bar: number | null
}

/**
 * Records every state a card passes through, with the status line and the progress bar as they were then,
 * so a short-lived one is not missed between two looks.
 */
async function watchStates(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen: Record<string, string[]> = {}
    const looks: Record<string, { state: string; text: string; bar: number | null }[]> = {}
    const w = window as unknown as { seenStates: typeof seen; seenLooks: typeof looks }
    w.seenStates = seen
    w.seenLooks = looks
    new MutationObserver(() => {
      for (const el of document.querySelectorAll<HTMLElement>('article[data-device]')) {
        const id = el.dataset.device!
        const state = el.dataset.state ?? ''
        seen[id] ??= []
        if (state && seen[id].at(-1) !== state) seen[id].push(state)
        const bar = el.querySelector<HTMLProgressElement>('progress.progress')!
        const look = {
          state,
          text: el.querySelector('.state')?.textContent ?? '',
          bar: bar.hidden ? null : bar.value,
        }
        looks[id] ??= []
        const last = looks[id].at(-1)
        if (!last || last.text !== look.text || last.bar !== look.bar) looks[id].push(look)
      }
    }).observe(document.body, { subtree: true, attributes: true, childList: true, characterData: true })
  })
}

const seenStates = (page: Page, id: string) =>
  page.evaluate(
    (d) => (window as unknown as { seenStates: Record<string, string[]> }).seenStates[d] ?? [],
    id,
  )

const seenLooks = (page: Page, id: string) =>
  page.evaluate(
    (d) => (window as unknown as { seenLooks: Record<string, CardLook[]> }).seenLooks[d] ?? [],
    id,
  )

/** Presses Tab until the focused element matches `selector`; fails when it is not reached in 80 presses. */
async function tabTo(page: Page, selector: string): Promise<void> {
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press('Tab')
    if (await page.evaluate((s) => document.activeElement?.matches(s) === true, selector)) return
  }
  throw new Error(`Tab never reached ${selector}`)
}

describe('the dashboard, without a key', () => {
  let bridge: TestBridge
  let kitchen: TestDevice
  let hall: TestDevice
  let page: Page

  beforeAll(async () => {
    bridge = await startBridge({ HTTP_PORT: 0, DEMO_STEP_MS: 40 })
    kitchen = await connectDevice(bridge.mqttUrl, 'kitchen')
    hall = await connectDevice(bridge.mqttUrl, 'hall')
    page = await browser.newPage({ viewport: { width: 360, height: 780 } })
  })

  afterAll(async () => {
    await page?.close()
    await kitchen?.close()
    await hall?.close()
    await bridge?.stop()
  })

  it('shows both displays, takes a prompt from the page and shows the picture the display got', async () => {
    const weight = new Map<string, number>()
    page.on('response', async (r) => {
      const path = new URL(r.url()).pathname
      if (path === '/' || path.startsWith('/dashboard/')) weight.set(path, (await r.body()).length)
    })
    await page.goto(`http://127.0.0.1:${bridge.httpPort}/`)
    await page.getByText('live', { exact: true }).waitFor()
    // The page is light: its HTML, script and style sheet together, as sent (README, "Dashboard").
    await expect
      .poll(() => [...weight.keys()].sort())
      .toEqual(['/', '/dashboard/app.js', '/dashboard/style.css'])
    const bytes = [...weight.values()].reduce((a, b) => a + b, 0)
    expect(bytes).toBeLessThan(24 * 1024)
    const cards = page.locator('article[data-device]')
    await expect
      .poll(() => cards.evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.device)))
      .toEqual(['hall', 'kitchen'])
    await expect
      .poll(() => page.locator('[data-device="kitchen"] .connection').textContent())
      .toMatch(/^connected/)
    await watchStates(page)
    // A display without a picture yet says so, with no empty image box.
    const hallCard = page.locator('[data-device="hall"]')
    expect(await hallCard.getByText('No picture yet.').isVisible()).toBe(true)
    expect(await hallCard.locator('img.picture').isVisible()).toBe(false)

    const card = page.locator('[data-device="kitchen"]')
    await card.getByRole('textbox', { name: 'Prompt', exact: true }).fill('a lighthouse at dusk')
    await card.getByText('Advanced').click()
    await card.getByLabel('Seed').fill('1234')
    await card.getByLabel('Steps').fill('12')
    // The keyboard: Enter on the focused button sends the form.
    await card.getByRole('button', { name: 'Generate', exact: true }).focus()
    await page.keyboard.press('Enter')

    const done = await kitchen.waitForStatus((s) => s.state === 'done')
    expect(done.seed).toBe(1234)
    const [frame] = await kitchen.waitForFrames(1)
    await page.waitForFunction(
      (id) =>
        document.querySelector<HTMLImageElement>('[data-device="kitchen"] img.picture')?.dataset.frameId ===
        id,
      String(done.frame_id),
    )
    expectSamePicture(await shownPixels(page, 'kitchen'), frame!)
    const states = await seenStates(page, 'kitchen')
    expect(states).toContain('generating')
    expect(states.at(-1)).toBe('done')
    // While it generated, the card had a moving progress bar and the time left (the demo gives an ETA).
    const generating = (await seenLooks(page, 'kitchen')).filter((l) => l.state === 'generating')
    expect(generating.some((l) => /^generating, \d+ %, about \d+ s left$/.test(l.text))).toBe(true)
    const bars = generating.map((l) => l.bar).filter((b) => b !== null)
    expect(bars.some((b) => b > 0 && b < 1)).toBe(true)
    expect(await card.locator('progress.progress').isHidden()).toBe(true)
    await expect
      .poll(() => card.locator('.state').textContent())
      .toBe(`done: frame ${done.frame_id}, seed 1234`)

    // What the display says about itself shows up on its card as it says it, without a reload.
    await kitchen.client.publishAsync(
      'pico/kitchen/info',
      JSON.stringify({ fw: '1.4.0', rssi: -61, heap_free: 81920, battery_v: 3.9 }),
      { qos: 1, retain: true },
    )
    await expect
      .poll(() => card.locator('.about').textContent())
      .toMatch(
        /^panel 240×240 rgb565-be · firmware 1\.4\.0 · Wi-Fi -61 dBm · 80 KiB free · battery 3\.9 V · /,
      )
    expect(await page.locator('[data-device="hall"] .about').textContent()).not.toMatch(/firmware|Wi-Fi/)

    // 360 px wide: one column, nothing wider than the screen.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(360)
    const box = await card.boundingBox()
    expect(box!.x).toBeGreaterThanOrEqual(0)
    expect(box!.x + box!.width).toBeLessThanOrEqual(360)
    await page.screenshot({ path: `${SHOTS}/dashboard-360.png`, fullPage: true })
  })

  it('shows a prompt sent over MQTT live, with the queue in order, and cancels a job from the page', async () => {
    const card = page.locator('[data-device="kitchen"]')
    await card.getByRole('textbox', { name: 'Prompt', exact: true }).fill('a very slow picture')
    await card.getByLabel('Steps').fill('150')
    await card.getByRole('button', { name: 'Generate', exact: true }).click()
    await page.waitForFunction(
      () => document.querySelector<HTMLElement>('[data-device="kitchen"]')?.dataset.state === 'generating',
    )

    // A prompt the bridge refuses, from MQTT: the hall's card shows it as its last error.
    await hall.client.publishAsync('pico/hall/prompt', JSON.stringify({ prompt: 'x', steps: 'many' }), {
      qos: 1,
    })
    const hallError = page.locator('[data-device="hall"] .error')
    await hallError.waitFor()
    expect(await hallError.textContent()).toMatch(/^Last error: .+ \(E_BAD_PROMPT\)$/)

    // Another display's prompt, from MQTT, waits behind it: the page shows it at once.
    const from = hall.statuses.length
    await hall.prompt('a small boat on a lake')
    await page.waitForFunction(
      () => document.querySelector('[data-device="hall"] .state')?.textContent === 'queued, position 1',
    )
    await expect
      .poll(() => page.locator('#queue li').allTextContents())
      .toEqual([expect.stringMatching(/^kitchen: generating/), expect.stringMatching(/^hall: position 1/)])

    const cancel = card.getByRole('button', { name: 'Cancel' })
    await expect.poll(() => cancel.isEnabled()).toBe(true)
    await cancel.click()
    const cancelled = await kitchen.waitForStatus((s) => s.state === 'cancelled')
    expect(cancelled.reason).toBe('requested')
    await page.waitForFunction(
      () => document.querySelector<HTMLElement>('[data-device="kitchen"]')?.dataset.state === 'cancelled',
    )

    const done = await hall.waitForStatus((s) => s.state === 'done', from)
    const [frame] = await hall.waitForFrames(1)
    await page.waitForFunction(
      (id) =>
        document.querySelector<HTMLImageElement>('[data-device="hall"] img.picture')?.dataset.frameId === id,
      String(done.frame_id),
    )
    expectSamePicture(await shownPixels(page, 'hall'), frame!)
    await expect
      .poll(() => page.locator('#generators li').allTextContents())
      .toEqual([expect.stringMatching(/^demo: up; recent: /)])
  })

  it('is used with the keyboard alone: Tab to a prompt box, the advanced fields and Generate', async () => {
    const from = hall.statuses.length
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur())
    await tabTo(page, '[data-device="hall"] textarea[name="prompt"]')
    await page.keyboard.type('a kite over the dunes')
    await tabTo(page, '[data-device="hall"] summary')
    // The fold-out stays as the last test left it, or opens with Enter.
    if (!(await page.locator('[data-device="hall"] details').evaluate((d) => (d as HTMLDetailsElement).open)))
      await page.keyboard.press('Enter')
    await tabTo(page, '[data-device="hall"] input[name="seed"]')
    await page.keyboard.type('4242')
    await tabTo(page, '[data-device="hall"] button[type="submit"]')
    // The focused control can be seen.
    expect(await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle)).not.toBe('none')
    await page.keyboard.press('Enter')
    const done = await hall.waitForStatus((s) => s.state === 'done', from)
    expect(done.seed).toBe(4242)
    await expect
      .poll(() => page.locator('[data-device="hall"] .about').textContent())
      .toContain('last prompt: “a kite over the dunes”')
  })

  it('generates again with the same prompt and a new seed', async () => {
    const from = kitchen.statuses.length
    await page.locator('[data-device="kitchen"]').getByRole('button', { name: 'Generate again' }).click()
    const done = await kitchen.waitForStatus((s) => s.state === 'done', from)
    expect(done.seed).not.toBe(1234)
    // Again means the picture on the display: the lighthouse, not the cancelled slow prompt.
    await expect
      .poll(() => page.locator('[data-device="kitchen"] .about').textContent())
      .toContain('a lighthouse at dusk')
    await page.waitForFunction(
      (id) =>
        document.querySelector<HTMLImageElement>('[data-device="kitchen"] img.picture')?.dataset.frameId ===
        id,
      String(done.frame_id),
    )
    await page.setViewportSize({ width: 1100, height: 900 })
    await page.evaluate(() => window.scrollTo(0, 0))
    await page.screenshot({ path: `${SHOTS}/dashboard-desktop.png` })
    if (process.env.UPDATE_DOCS_SCREENSHOT === '1') await page.screenshot({ path: 'docs/dashboard.png' })
  })

  it('shows a display that goes away as not connected, at once', async () => {
    await hall.close()
    await expect
      .poll(() => page.locator('[data-device="hall"] .connection').textContent())
      .toMatch(/^not connected/)
    expect(await page.locator('[data-device="kitchen"] .connection').textContent()).toMatch(/^connected/)
  })
})

describe('the dashboard when the bridge restarts', () => {
  let bridge: TestBridge
  let page: Page

  afterAll(async () => {
    await page?.close()
    await bridge?.stop()
  })

  it('says it lost the bridge, reconnects by itself with a new ticket, and is live again', async () => {
    bridge = await startBridge({ HTTP_PORT: 0 })
    const port = bridge.httpPort!
    page = await browser.newPage({ viewport: { width: 360, height: 700 } })
    const streams: string[] = []
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/api/v1/events') streams.push(r.url())
    })
    await page.goto(`http://127.0.0.1:${port}/`)
    await page.getByText('live', { exact: true }).waitFor()
    await watchStates(page)

    await bridge.stop()
    await page.getByText(/^not connected; trying again in \d+ s$/).waitFor()
    // The same address again, as after a restart of the service (the port the first one was given).
    bridge = await startBridge({ HTTP_PORT: port })
    await page.getByText('live', { exact: true }).waitFor()
    expect(new Set(streams).size).toBeGreaterThanOrEqual(2)

    // Live again: a display that connects now and makes a picture shows up without a reload.
    const porch = await connectDevice(bridge.mqttUrl, 'porch')
    await porch.prompt('after the restart')
    const done = await porch.waitForStatus((s) => s.state === 'done')
    await page.waitForFunction(
      (id) =>
        document.querySelector<HTMLImageElement>('[data-device="porch"] img.picture')?.dataset.frameId === id,
      String(done.frame_id),
    )
    expect(await seenStates(page, 'porch')).toContain('done')
    await porch.close()
  })
})

describe('the dashboard with previews from A1111', () => {
  let fake: FakeA1111
  let bridge: TestBridge
  let porch: TestDevice
  let page: Page

  beforeAll(async () => {
    // Slow enough steps that the job is still running when the page has shown a preview: the test then
    // cancels it instead of waiting for the end.
    fake = await startFakeA1111({ stepMs: 100 })
    bridge = await startBridge({ HTTP_PORT: 0, A1111_BASE_URL: fake.url })
    porch = await connectDevice(bridge.mqttUrl, 'porch')
    page = await browser.newPage({ viewport: { width: 360, height: 780 } })
  })

  afterAll(async () => {
    await page?.close()
    await porch?.close()
    await bridge?.stop()
    await fake?.close()
  })

  it('shows the preview frames the display gets while A1111 works, when the prompt asks for them', async () => {
    await page.goto(`http://127.0.0.1:${bridge.httpPort}/`)
    await page.getByText('live', { exact: true }).waitFor()
    const card = page.locator('[data-device="porch"]')
    const sent: unknown[] = []
    page.on('request', (r) => {
      if (r.method() === 'POST' && new URL(r.url()).pathname === '/api/v1/devices/porch/prompt')
        sent.push(r.postDataJSON())
    })
    await card.getByRole('textbox', { name: 'Prompt', exact: true }).fill('a porch light in the fog')
    await card.getByText('Advanced').click()
    await card.getByLabel('Negative prompt').fill('people, text')
    await card.getByLabel('Seed').fill('777')
    await card.getByLabel('Steps').fill('150')
    await card.getByLabel('Fit').selectOption('contain')
    await card.getByLabel('Show previews while generating').check()
    await card.getByRole('button', { name: 'Generate', exact: true }).click()
    // Every field of the fold-out goes with the prompt, and what A1111 is asked for follows it.
    await expect.poll(() => sent).toHaveLength(1)
    expect(sent[0]).toEqual({
      prompt: 'a porch light in the fog',
      negative_prompt: 'people, text',
      seed: 777,
      steps: 150,
      fit: 'contain',
      preview: true,
    })
    const txt2img = () => fake.requests.find((r) => r.path === '/sdapi/v1/txt2img')
    await expect.poll(txt2img).toBeDefined()
    expect(txt2img()!.body).toMatchObject({
      prompt: 'a porch light in the fog',
      negative_prompt: 'people, text',
      seed: 777,
      steps: 150,
    })

    const shown = await page.waitForFunction(() => {
      const img = document.querySelector<HTMLImageElement>('[data-device="porch"] img.picture')
      return img?.dataset.kind === 'preview' && img.complete ? img.dataset.frameId : null
    })
    const frameId = Number(await shown.jsonValue())
    // The same bands went to the display over MQTT; it may still be reading them.
    const previewOf = () => porch.frames.find((f) => f.preview && f.frameId === frameId)
    await expect.poll(previewOf).toBeDefined()
    const preview = previewOf()
    expect(await card.locator('img.picture').getAttribute('alt')).toBe(
      'preview of the picture being made for porch',
    )
    expectSamePicture(await shownPixels(page, 'porch'), preview!)
    expect(await card.getAttribute('data-state')).toBe('generating')
    await page.screenshot({ path: `${SHOTS}/dashboard-preview.png`, fullPage: true })

    await card.getByRole('button', { name: 'Cancel' }).click()
    await porch.waitForStatus((s) => s.state === 'cancelled')
    // No final frame was made: the page asks for no picture the display never got.
    expect(porch.frames.every((f) => f.preview)).toBe(true)
  })
})

describe('the dashboard with SERVICE_API_KEY', () => {
  const KEY = 'dashboard-test-key-4f1c9a'
  let bridge: TestBridge
  let page: Page

  beforeAll(async () => {
    bridge = await startBridge({ HTTP_PORT: 0, SERVICE_API_KEY: KEY })
  })

  afterAll(async () => {
    await page?.close()
    await bridge?.stop()
  })

  it('asks for the key once, keeps it, and never puts the key or a ticket in a log line', async () => {
    const base = `http://127.0.0.1:${bridge.httpPort}`
    page = await browser.newPage({ viewport: { width: 360, height: 700 } })
    const tickets: string[] = []
    /** Every API request but the stream itself, with the key it carried. */
    const calls: { path: string; key: string | undefined }[] = []
    page.on('request', (r) => {
      const url = new URL(r.url())
      const token = url.searchParams.get('token')
      if (token) tickets.push(token)
      if (url.pathname.startsWith('/api/') && url.pathname !== '/api/v1/events')
        calls.push({ path: url.pathname, key: r.headers()['x-api-key'] })
    })
    await page.goto(`${base}/`)
    const keyBox = page.getByLabel('API key')
    await keyBox.waitFor()
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('key')

    await keyBox.fill('not the key')
    await page.keyboard.press('Enter')
    await page.getByText('The bridge refused this key.').waitFor()

    await keyBox.fill(KEY)
    await page.getByRole('button', { name: 'Use this key' }).click()
    await page.getByText('live', { exact: true }).waitFor()
    expect(await page.evaluate(() => localStorage.getItem('pico-a1111-bridge.api-key'))).toBe(KEY)

    await page.reload()
    await page.getByText('live', { exact: true }).waitFor()
    expect(await page.locator('#key-form').isHidden()).toBe(true)
    expect(tickets).toHaveLength(2)

    // With the key kept, the page steers a display and shows its picture: every call carried the key.
    const den = await connectDevice(bridge.mqttUrl, 'den')
    try {
      const card = page.locator('[data-device="den"]')
      await card.getByRole('textbox', { name: 'Prompt', exact: true }).fill('a den with a fire')
      await card.getByRole('button', { name: 'Generate', exact: true }).click()
      const done = await den.waitForStatus((s) => s.state === 'done')
      const [frame] = await den.waitForFrames(1)
      await page.waitForFunction(
        (id) =>
          document.querySelector<HTMLImageElement>('[data-device="den"] img.picture')?.dataset.frameId === id,
        String(done.frame_id),
      )
      expectSamePicture(await shownPixels(page, 'den'), frame!)
    } finally {
      await den.close()
    }
    const paths = new Set(calls.map((c) => c.path))
    expect(paths).toEqual(
      new Set(['/api/v1/events/token', '/api/v1/devices/den/prompt', '/api/v1/devices/den/frame.png']),
    )
    // The refused try before the key was typed went without it; everything after with it.
    const keyed = calls.slice(calls.findIndex((c) => c.key === KEY))
    expect(keyed.every((c) => c.key === KEY)).toBe(true)
    expect(keyed.length).toBeGreaterThanOrEqual(4)

    // A ticket is good once: the same URL again is refused.
    const replay = await fetch(`${base}/api/v1/events?token=${tickets[0]}`)
    expect(replay.status).toBe(401)
    const text = JSON.stringify(bridge.logs)
    expect(text).not.toContain(KEY)
    for (const ticket of tickets) expect(text).not.toContain(ticket)
    // The refused replay is logged by its path alone.
    await expect
      .poll(() => bridge.logs.some((l) => l.path === '/api/v1/events' && l.status === 401))
      .toBe(true)
  })

  it('streams a snapshot with a retry field to a ticket, and refuses a ticket without the key', async () => {
    const base = `http://127.0.0.1:${bridge.httpPort}`
    expect((await fetch(`${base}/api/v1/events/token`, { method: 'POST' })).status).toBe(401)
    expect((await fetch(`${base}/api/v1/events`)).status).toBe(401)
    const { token } = (await (
      await fetch(`${base}/api/v1/events/token`, { method: 'POST', headers: { 'x-api-key': KEY } })
    ).json()) as { token: string }
    const controller = new AbortController()
    const stream = await fetch(`${base}/api/v1/events?token=${token}`, { signal: controller.signal })
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const reader = stream.body!.getReader()
    let head = ''
    while (!head.includes('\n\n')) head += new TextDecoder().decode((await reader.read()).value)
    expect(head).toMatch(/^event: snapshot\ndata: \{.*\}\nretry: 3000\n\n/)
    controller.abort()
  })
})
