import { panelPixelsToPng } from '../image/convert.ts'
import type { PanelProfile } from '../image/panel.ts'
import type { StoredFrame } from '../store/frame-store.ts'

/*
 * The Picture entity's image: a display's last finished frame as PNG at the panel's own size, as the panel
 * shows it (RGB565 expanded back to 8 bits, e-paper formats in the panel's inks), the same bytes as
 * GET /api/v1/devices/:id/frame.png. Sent whole on `image_topic` with `content_type: image/png` (Home
 * Assistant's MQTT image docs, https://www.home-assistant.io/integrations/image.mqtt/) rather than as a
 * `url_topic`: the bridge knows no URL of its HTTP listener that Home Assistant can reach (HTTP_HOST is
 * usually 0.0.0.0, and behind SERVICE_API_KEY the route wants a header Home Assistant's fetch does not
 * send), and a retained image is back after a Home Assistant restart with the HTTP listener off as well.
 */

export async function framePng(frame: StoredFrame, panel: PanelProfile | undefined): Promise<Buffer> {
  // The panel's own palette only while the frame is still in the panel's format.
  const palette = panel?.format === frame.format ? panel.palette : undefined
  return panelPixelsToPng(frame.pixels, { ...frame, palette })
}
