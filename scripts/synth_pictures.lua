-- Log-mel spectrogram pictures of one synthetic clip per machine type, as
-- PNG files (docs/synth_<type>.png), for the README.
--
--   ./machrt scripts/synth_pictures.lua [--data data/synthetic] [--out docs]
--
-- Each picture: 10 s across (313 frames, hop 512 at 16 kHz), 128 mel bands
-- up (0 to 8 kHz, low at the bottom), 70 dB of range from dark to bright.
-- The clip is the first normal clip of model id_00 at +6 dB SNR. The PNG
-- encoder is minimal (palette image, uncompressed deflate blocks), so the
-- script needs nothing beyond machrt.

local audio = require "machrt.audio"
local synth = require "machrt.synth"

local args = {}
for i = 1, #arg - 1, 2 do args[(arg[i]:gsub("^%-%-", ""))] = arg[i + 1] end
local data, out = args.data or "data/synthetic", args.out or "docs"

-- ---- PNG ----------------------------------------------------------------------

local crc_table = {}
for n = 0, 255 do
    local c = n
    for _ = 1, 8 do c = (c & 1 == 1) and (0xEDB88320 ~ (c >> 1)) or (c >> 1) end
    crc_table[n] = c
end

local function crc32(s)
    local c = 0xFFFFFFFF
    for i = 1, #s do c = crc_table[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8) end
    return c ~ 0xFFFFFFFF
end

local function chunk(kind, body)
    return string.pack(">I4", #body) .. kind .. body .. string.pack(">I4", crc32(kind .. body))
end

-- zlib stream of stored (uncompressed) deflate blocks.
local function zlib_stored(raw)
    local parts, a, b = { "\x78\x01" }, 1, 0
    for i = 1, #raw, 65535 do
        local block = raw:sub(i, i + 65534)
        local last = i + 65535 > #raw and 1 or 0
        parts[#parts + 1] = string.pack("<BI2I2", last, #block, (~#block) & 0xFFFF) .. block
    end
    for i = 1, #raw do
        a = (a + raw:byte(i)) % 65521
        b = (b + a) % 65521
    end
    parts[#parts + 1] = string.pack(">I4", (b << 16) | a)
    return table.concat(parts)
end

-- A dark-blue to yellow ramp (close to matplotlib's viridis at its knots).
local KNOTS = { { 68, 1, 84 }, { 59, 82, 139 }, { 33, 145, 140 }, { 94, 201, 98 }, { 253, 231, 37 } }
local function palette()
    local p = {}
    for i = 0, 255 do
        local x = i / 255 * (#KNOTS - 1)
        local k = math.min(math.floor(x), #KNOTS - 2)
        local f = x - k
        local c = {}
        for j = 1, 3 do c[j] = math.floor(KNOTS[k + 1][j] * (1 - f) + KNOTS[k + 2][j] * f + 0.5) end
        p[#p + 1] = string.char(c[1], c[2], c[3])
    end
    return table.concat(p)
end

local function write_png(path, width, height, pixel)
    local rows = {}
    for y = 1, height do
        local r = { "\0" }
        for x = 1, width do r[#r + 1] = string.char(pixel(x, y)) end
        rows[#rows + 1] = table.concat(r)
    end
    local png = "\137PNG\r\n\26\n"
        .. chunk("IHDR", string.pack(">I4I4BBBBB", width, height, 8, 3, 0, 0, 0))
        .. chunk("PLTE", palette())
        .. chunk("IDAT", zlib_stored(table.concat(rows)))
        .. chunk("IEND", "")
    local tmp = path .. ".tmp"
    local f = assert(io.open(tmp, "wb"))
    f:write(png)
    f:close()
    assert(os.rename(tmp, path))
end

-- ---- pictures --------------------------------------------------------------------

local info = synth.ensure(data)
local mel = audio.MelSpectrogram{ sample_rate = 16000, n_fft = 1024, hop_length = 512, n_mels = 128 }
local picked = {}
for line in io.lines(info.csv) do
    local path, label, id, cond, snr = line:match("^%d+,([^,]+),(%a+),(%d+),(%a+),(%-?%d+)$")
    if path and not picked[label] and id == "00" and cond == "normal" and snr == "6" then
        picked[label] = path
    end
end
for _, t in ipairs(audio.synth_types()) do
    local rel = assert(picked[t], "no normal id_00 clip at 6 dB for " .. t)
    local db = audio.amplitude_to_db(mel:forward((audio.load(data .. "/" .. rel, { channel = 1 }))))
    local v = db:totable()
    local top = db:max()
    local h, w = #v, #v[1]
    local file = out .. "/synth_" .. t .. ".png"
    write_png(file, w, h, function(x, y)
        local d = v[h - y + 1][x]
        local u = (d - (top - 70)) / 70
        return math.max(0, math.min(255, math.floor(u * 255 + 0.5)))
    end)
    print(string.format("%s: %s -> %s (%dx%d)", t, rel, file, w, h))
end
