/// Lays images out as one RGB contact sheet: tiles in rows of `columns`, separated and framed by a thin border.
///
/// Tiles are placed top-left in cells of the largest tile's size (smaller ones are padded with the border
/// colour); grey tiles are expanded to RGB, alpha is dropped. No text is drawn: write captions beside the grid
/// (`diffuse8 evaluate-fidelity` writes a `.txt` sidecar, one line per tile in reading order).
public enum ImageGrid {
    /// - Parameters:
    ///   - images: at least one image.
    ///   - columns: tiles per row (`nil`: the smallest `c` with `c * c >= images.count`, e.g. 4 for 16 images).
    ///   - border: border width in pixels, between tiles and around the sheet.
    ///   - borderColour: RGB of the border.
    public static func compose(_ images: [PixelImage], columns: Int? = nil, border: Int = 2,
                               borderColour: (UInt8, UInt8, UInt8) = (64, 64, 64)) -> PixelImage {
        precondition(!images.isEmpty, "a grid needs at least one image")
        precondition(border >= 0, "border must not be negative")
        var defaultColumns = 1
        while defaultColumns * defaultColumns < images.count { defaultColumns += 1 }
        let columns = max(1, min(columns ?? defaultColumns, images.count))
        let rows = (images.count + columns - 1) / columns
        let cellWidth = images.map(\.width).max()!, cellHeight = images.map(\.height).max()!
        let width = columns * cellWidth + (columns + 1) * border
        let height = rows * cellHeight + (rows + 1) * border

        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for p in 0..<(width * height) {
            pixels[3 * p] = borderColour.0; pixels[3 * p + 1] = borderColour.1; pixels[3 * p + 2] = borderColour.2
        }
        for (index, image) in images.enumerated() {
            let left = border + (index % columns) * (cellWidth + border)
            let top = border + (index / columns) * (cellHeight + border)
            for y in 0..<image.height {
                for x in 0..<image.width {
                    let source = (y * image.width + x) * image.channels
                    let target = ((top + y) * width + left + x) * 3
                    if image.channels == 1 {
                        let v = image.pixels[source]
                        pixels[target] = v; pixels[target + 1] = v; pixels[target + 2] = v
                    } else {
                        pixels[target] = image.pixels[source]
                        pixels[target + 1] = image.pixels[source + 1]
                        pixels[target + 2] = image.pixels[source + 2]
                    }
                }
            }
        }
        return PixelImage(width: width, height: height, channels: 3, pixels: pixels)
    }
}
