-- machrt.audio: info, load, save, resample, chunks, and their errors.
--
-- Files are written at test time: WAV bytes assembled here with string.pack
-- (so decoding is checked against samples known exactly, independent of
-- audio.save), and audio.save for the other formats (its output is checked
-- against libsndfile directly in tests/c/test_audio_io.c). The real MIMII
-- clips are used when MACHRT_SAMPLE_DATA names their folder; otherwise
-- those tests are reported as skipped.

local mt = require "machrt"
local audio = require "machrt.audio"
local A = require "assert"

local T = {}
local tmp_files = {}

-- Each test's temporary files are removed when it ends, pass or fail.
local function test(name, fn)
    T[#T + 1] = { name, function()
        local ok, err = pcall(fn)
        for _, p in ipairs(tmp_files) do os.remove(p) end
        tmp_files = {}
        if not ok then error(err, 0) end
    end }
end

-- Helpers ---------------------------------------------------------------------

-- A fresh temporary path ending in `suffix`; removed when the test ends.
local function tmp(suffix)
    local base = os.tmpname()
    os.remove(base)
    local p = base .. (suffix or "")
    tmp_files[#tmp_files + 1] = p
    return p
end

local function write_file(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
end

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- Deterministic 16-bit sample of channel c (1-based), frame i (1-based).
local function s16(c, i)
    if i == 1 then return c % 2 == 1 and -32768 or 32767 end
    return ((i * 7919 + c * 104729) * 2654435761) % 65536 - 32768
end

-- A canonical 44-byte-header PCM WAV, assembled by hand.
local function wav_bytes(channels, frames, rate, sample)
    local parts = {}
    for i = 1, frames do
        for c = 1, channels do parts[#parts + 1] = string.pack("<i2", sample(c, i)) end
    end
    local data = table.concat(parts)
    return "RIFF" .. string.pack("<I4", 36 + #data) .. "WAVE" ..
        "fmt " .. string.pack("<I4I2I2I4I4I2I2", 16, 1, channels, rate,
            rate * channels * 2, channels * 2, 16) ..
        "data" .. string.pack("<I4", #data) .. data
end

local function max_abs_diff(a, b)
    return (a - b):abs():max()
end

-- Relative error power in dB of `y` against fn(i) (0-based i), over the
-- middle 90 %.
local function error_db(y, fn)
    local n = y:numel()
    local vals = y:totable()
    local e, s = 0, 0
    for i = n // 20, n - n // 20 - 1 do
        local ref = fn(i)
        local d = vals[i + 1] - ref
        e = e + d * d
        s = s + ref * ref
    end
    return 10 * math.log(e / s, 10)
end

local function tone(f, rate, n)
    local t = {}
    for i = 1, n do t[i] = math.sin(2 * math.pi * f * (i - 1) / rate) end
    return mt.tensor(t)
end

-- info and load -----------------------------------------------------------------

test("info and load of a hand-made 16-bit WAV", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(3, 500, 16000, s16))
    local info = audio.info(p)
    A.eq(info.sample_rate, 16000)
    A.eq(info.channels, 3)
    A.eq(info.frames, 500)
    A.near(info.seconds, 500 / 16000, 1e-12)
    A.eq(info.format, "wav")
    A.eq(info.encoding, "pcm16")
    local w, sr = audio.load(p)
    A.eq(sr, 16000)
    A.shape_eq(w, { 3, 500 })
    local t = w:totable()
    for c = 1, 3 do
        for i = 1, 500 do
            if t[c][i] ~= s16(c, i) / 32768 then
                error(string.format("channel %d frame %d: %.9g, expected %.9g", c, i, t[c][i],
                    s16(c, i) / 32768))
            end
        end
    end
end)

test("channel pick is the matching row, mono is the mean", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(4, 3000, 8000, s16))
    local all = audio.load(p)
    for c = 1, 4 do
        local one, sr = audio.load(p, { channel = c })
        A.eq(sr, 8000)
        A.shape_eq(one, { 3000 })
        A.eq(max_abs_diff(one, all:select(1, c)), 0)
    end
    local mono = audio.load(p, { mono = true })
    A.shape_eq(mono, { 3000 })
    A.truthy(max_abs_diff(mono, all:mean(1)) <= 1e-6, "mono = mean of the channels")
    -- mono = false and an explicit nil channel: all channels
    A.shape_eq(audio.load(p, { mono = false }), { 4, 3000 })
end)

test("offset and duration select exact frames", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(2, 16000, 16000, s16))
    local all = audio.load(p)
    local cases = {
        { 0.25, 0.5, 4000, 8000 },
        { 0, 0.001, 0, 16 },
        { 0.5, 10, 8000, 8000 },       -- past the end: cut at the end
        { 0.99990, nil, 15998, 2 },    -- rounds to the nearest frame
        { 0.00004, 0.00004, 1, 1 },
    }
    for _, c in ipairs(cases) do
        local w = audio.load(p, { offset = c[1], duration = c[2] })
        A.shape_eq(w, { 2, c[4] })
        A.eq(max_abs_diff(w, all:narrow(2, c[3] + 1, c[4])), 0)
        local one = audio.load(p, { offset = c[1], duration = c[2], channel = 2 })
        A.eq(max_abs_diff(one, all:select(1, 2):narrow(1, c[3] + 1, c[4])), 0)
    end
end)

test("load with sample_rate resamples", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(2, 8000, 16000, s16))
    local w, sr = audio.load(p, { sample_rate = 22050 })
    A.eq(sr, 22050)
    A.shape_eq(w, { 2, 11025 })
    local raw = audio.load(p)
    A.eq(max_abs_diff(w, audio.resample(raw, 16000, 22050)), 0)
    local m, sr2 = audio.load(p, { channel = 1, sample_rate = 8000 })
    A.eq(sr2, 8000)
    A.shape_eq(m, { 4000 })
end)

-- 16-bit samples kept small (audio.load_pcm16, audio.unpack_pcm16) ------------------

-- Whether two tensors hold the same bits (SHA-256 of each).
local function same_bits(a, b)
    return a:dtype() == b:dtype() and table.concat(a:shape(), "x") == table.concat(b:shape(), "x")
        and mt.checksum({ x = a }, {}) == mt.checksum({ x = b }, {})
end

test("load_pcm16 keeps a channel's 16-bit samples; unpack_pcm16 gives audio.load's wave bit for bit", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(2, 4001, 16000, s16)) -- 4001: the last int64 holds one sample
    for c = 1, 2 do
        local packed = audio.load_pcm16(p, c)
        A.eq(packed:dtype(), "int64")
        A.shape_eq(packed, { 2 + 1001 })
        A.eq(packed:get(1), 4001, "frames")
        A.eq(packed:get(2), 16000, "sample rate")
        -- At the file's rate: s / 32768, the samples written.
        local t = audio.unpack_pcm16(packed):totable()
        A.eq(#t, 4001)
        for i = 1, 4001 do
            if t[i] ~= s16(c, i) / 32768 then
                error(string.format("channel %d frame %d: %.9g, expected %.9g", c, i, t[i], s16(c, i) / 32768))
            end
        end
        A.truthy(same_bits(audio.unpack_pcm16(packed), audio.load(p, { channel = c })))
        for _, how in ipairs{ "soxr", "torchaudio" } do
            for _, rate in ipairs{ 22050, 8000, 16000 } do
                local want = audio.load(p, { channel = c, sample_rate = rate, resampler = how })
                local got = audio.unpack_pcm16(packed, { sample_rate = rate, resampler = how, name = p })
                A.truthy(same_bits(got, want), string.format("channel %d, %s to %d Hz", c, how, rate))
            end
        end
    end
    -- A mono file needs no channel.
    local m = tmp(".wav")
    write_file(m, wav_bytes(1, 300, 8000, s16))
    A.truthy(same_bits(audio.unpack_pcm16(audio.load_pcm16(m), { sample_rate = 22050 }),
                       audio.load(m, { sample_rate = 22050 }):select(1, 1):contiguous()))
    -- Not 16-bit PCM: nil, the caller keeps float32.
    local f = tmp(".wav")
    audio.save(f, mt.zeros{ 100 }, 8000, { float = true })
    A.eq(audio.load_pcm16(f), nil)
    -- Errors: several channels unpicked, a channel out of range, a tensor that is not packed samples,
    -- an upsampling past what audio.load allows (named by the file).
    A.raises(function() audio.load_pcm16(p) end, "audio.load_pcm16", "has 2 channels: pick one")
    A.raises(function() audio.load_pcm16(p, 3) end, "channel 3 out of range")
    A.raises(function() audio.unpack_pcm16(mt.zeros{ 5 }) end, "expects the samples of audio.load_pcm16")
    A.raises(function() audio.unpack_pcm16(mt.zeros({ 5 }, "int64"), { name = "x.wav" }) end,
             "x.wav: not the samples of audio.load_pcm16")
    A.raises(function() audio.unpack_pcm16(audio.load_pcm16(m), { sampling = 1 }) end, "unknown option 'sampling'")
    local slow = tmp(".wav")
    write_file(slow, wav_bytes(1, 3000, 100, s16))
    A.raises(function() audio.unpack_pcm16(audio.load_pcm16(slow), { sample_rate = 10000000, name = slow }) end,
             slow, "from 100 Hz to 10000000 Hz", "refused")
end)

-- save -----------------------------------------------------------------------------

test("save/load round trips in every format", function()
    mt.manual_seed(5)
    -- Samples on the 16-bit grid come back exactly from lossless formats.
    local w = ((mt.rand({ 3, 4000 }) * 65536):long():float() - 32768) / 32768
    local cases = {
        { ".wav", nil, "wav", "pcm16", true },
        { ".wav", { float = true }, "wav", "float", true },
        { ".wav", { encoding = "pcm24" }, "wav", "pcm24", true },
        { ".wav", { encoding = "pcm32" }, "wav", "pcm32", true },
        { ".flac", nil, "flac", "pcm16", true },
        { ".flac", { encoding = "pcm24" }, "flac", "pcm24", true },
        { ".aiff", nil, "aiff", "pcm16", true },
        { ".aif", { float = true }, "aiff", "float", true },
        { ".ogg", nil, "ogg", "vorbis", false },
        { ".bin", { format = "flac" }, "flac", "pcm16", true },
        { "", nil, "wav", "pcm16", true },
    }
    for _, c in ipairs(cases) do
        local p = tmp(c[1])
        audio.save(p, w, 16000, c[2])
        local info = audio.info(p)
        A.eq({ info.format, info.encoding, info.channels, info.frames, info.sample_rate },
            { c[3], c[4], 3, 4000, 16000 }, "info of " .. c[1])
        local back, sr = audio.load(p)
        A.eq(sr, 16000)
        A.shape_eq(back, { 3, 4000 })
        if c[5] then
            A.eq(max_abs_diff(back, w), 0, "round trip through " .. c[3] .. " " .. c[4])
        end
    end
end)

test("save writes a {frames} wave as mono and clips PCM", function()
    local p = tmp(".wav")
    audio.save(p, mt.tensor({ 0.5, -0.25, 1.0, 3, -7 }), 8000)
    A.eq(audio.info(p).channels, 1)
    local back = audio.load(p, { channel = 1 })
    A.tensor_near(back, { 0.5, -0.25, 32767 / 32768, 32767 / 32768, -1 }, 0)
    -- float keeps values beyond [-1, 1]
    audio.save(p, mt.tensor({ 0.5, 3, -7 }), 8000, { float = true })
    A.tensor_near(audio.load(p, { mono = true }), { 0.5, 3, -7 }, 0)
end)

test("Vorbis round trip keeps a tone", function()
    local p = tmp(".ogg")
    local x = tone(440, 16000, 16000) * 0.5
    audio.save(p, x, 16000)
    local back = audio.load(p, { channel = 1 })
    A.shape_eq(back, { 16000 })
    local vals = x:totable()
    A.truthy(error_db(back, function(i) return vals[i + 1] end) < -20, "Vorbis tone error")
end)

test("save replaces an existing file and leaves no temporary", function()
    local p = tmp(".wav")
    write_file(p, "old contents")
    audio.save(p, mt.zeros({ 2, 10 }), 16000)
    A.shape_eq(audio.load(p), { 2, 10 })
    local dir, name = p:match("^(.*)/([^/]+)$")
    local ls = assert(io.popen('ls -a "' .. dir .. '"'))
    local count = 0
    for line in ls:lines() do
        if line:sub(1, #name) == name then count = count + 1 end
    end
    ls:close()
    A.eq(count, 1, "files named " .. name .. "*")
end)

-- resample -----------------------------------------------------------------------------

test("resample 16000 -> 22050: tones at 1, 5, 7 kHz within -60 dB", function()
    for _, f in ipairs({ 1000, 5000, 7000 }) do
        local y = audio.resample(tone(f, 16000, 32000), 16000, 22050)
        A.shape_eq(y, { 44100 })
        local db = error_db(y, function(i) return math.sin(2 * math.pi * f * i / 22050) end)
        A.truthy(db < -60, string.format("%d Hz: error %.1f dB", f, db))
    end
end)

test("resample to more memory than there is says what it was asked", function()
    -- 10^6 frames from 1 Hz to 10 MHz: 10^13 frames, 40 TB.
    A.raises(function() return audio.resample(mt.zeros{ 1000000 }, 1, 10000000) end,
        "audio.resample: 1000000 frames from 1 Hz to 10000000 Hz make 10000000000000 frames")
end)

test("resample keeps leading dimensions and follows torchaudio's length", function()
    mt.manual_seed(9)
    local x = mt.rand({ 2, 3, 1001 }) - 0.5
    local y = audio.resample(x, 16000, 22050)
    A.shape_eq(y, { 2, 3, 1380 })    -- ceil(1001 * 22050 / 16000) = ceil(1379.4)
    A.eq(max_abs_diff(y:select(1, 2):select(1, 3), audio.resample(x:select(1, 2):select(1, 3),
        16000, 22050)), 0)
    A.shape_eq(audio.resample(mt.zeros({ 160000 }), 16000, 22050), { 220500 })
    A.shape_eq(audio.resample(mt.zeros({ 100 }), 44100, 16000), { 37 })
    -- same rate: an equal copy
    local same = audio.resample(x, 16000, 16000)
    A.eq(max_abs_diff(same, x), 0)
    same:fill(0)
    A.truthy(x:abs():sum() > 0, "the copy does not share storage")
    -- integer-valued floats are accepted as rates
    A.shape_eq(audio.resample(mt.zeros({ 10 }), 16000.0, 8000.0), { 5 })
end)

-- resampler = "torchaudio": torchaudio.functional.resample's outputs on synthetic
-- signals (tests/fixtures/resample_torchaudio.safetensors, made by
-- gen_resample_fixtures.py; each case's rates are in its metadata).
local RESAMPLE_REF = "tests/fixtures/resample_torchaudio.safetensors"

test("resampler 'torchaudio' gives torchaudio.functional.resample's output to float rounding", function()
    local ref, meta = mt.load(RESAMPLE_REF)
    local names = {}
    for key, rates in pairs(meta) do
        local name = key:match("^case%.(.+)$")
        if name then names[#names + 1] = { name, rates } end
    end
    table.sort(names, function(a, b) return a[1] < b[1] end)
    A.truthy(#names >= 10, "the fixture holds its cases")
    for _, c in ipairs(names) do
        local from, to = c[2]:match("^(%d+) (%d+)$")
        from, to = tonumber(from), tonumber(to)
        local x, want = ref["in." .. c[1]], ref["out." .. c[1]]
        local got = audio.resample(x, from, to, { resampler = "torchaudio" })
        A.shape_eq(got, want:shape())
        local err = max_abs_diff(got, want)
        A.truthy(err <= 1e-5, string.format("%s (%d -> %d Hz): max |difference| %.3g", c[1], from, to, err))
    end
    -- The fixture tells the resamplers apart: libsoxr cuts what torchaudio
    -- keeps near 8 kHz.
    local x, want = ref["in.tones_16000_22050"], ref["out.tones_16000_22050"]
    A.truthy(max_abs_diff(audio.resample(x, 16000, 22050), want) > 1e-2, "libsoxr differs from torchaudio")
end)

test("load with resampler 'torchaudio' resamples the picked channel, or every channel, as audio.resample", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(3, 4001, 16000, s16))
    local raw = audio.load(p)
    local all = audio.load(p, { sample_rate = 22050, resampler = "torchaudio" })
    A.eq(max_abs_diff(all, audio.resample(raw, 16000, 22050, { resampler = "torchaudio" })), 0)
    local two, sr = audio.load(p, { channel = 2, sample_rate = 22050, resampler = "torchaudio" })
    A.eq(sr, 22050)
    A.shape_eq(two, { 5514 })
    A.eq(max_abs_diff(two, all:select(1, 2)), 0)
    A.truthy(max_abs_diff(two, audio.load(p, { channel = 2, sample_rate = 22050 })) > 1e-4,
        "the default (libsoxr) is another resampler")
    -- At the file's own rate nothing is resampled.
    A.eq(max_abs_diff(audio.load(p, { sample_rate = 16000, resampler = "torchaudio" }), raw), 0)
end)

test("errors: an unknown resampler, and a rate pair too costly for the torchaudio one", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(1, 160, 16000, s16))
    A.raises(function() local x = audio.load(p, { sample_rate = 22050, resampler = "sinc" }) return x end,
        "audio.load", "unknown resampler 'sinc'", "'soxr'", "'torchaudio'")
    A.raises(function() local x = audio.resample(mt.zeros{ 10 }, 16000, 22050, { resampler = 1 }) return x end,
        "audio.resample", "resampler")
    A.raises(function() local x = audio.resample(mt.zeros{ 10 }, 16000, 22050, { resampeler = "soxr" }) return x end,
        "audio.resample", "resampeler")
    A.raises(function()
        local x = audio.resample(mt.zeros{ 10 }, 9999991, 10000000, { resampler = "torchaudio" }) return x
    end, "audio.resample", "9999991 Hz to 10000000 Hz", "use resampler 'soxr'")
end)

-- chunks -------------------------------------------------------------------------------

test("chunks: the Fix method", function()
    local sr = 100
    local function chunks_of(n, seconds, opts)
        return audio.chunks(mt.arange(n) + 1, sr, seconds, opts)
    end
    local c = chunks_of(1000, 5)                    -- 10 s in 5 s chunks
    A.shape_eq(c, { 2, 500 })
    A.eq(c:get(1, 1), 1)
    A.eq(c:get(2, 500), 1000)
    A.shape_eq(chunks_of(1240, 5), { 2, 500 })     -- partial last chunk dropped
    A.shape_eq(chunks_of(1500, 5), { 3, 500 })
    local short = chunks_of(120, 5)                 -- shorter than a chunk: padded
    A.shape_eq(short, { 1, 500 })
    A.eq(short:get(1, 120), 120)
    A.eq(short:get(1, 121), 0)
    A.eq(short:sum(), 120 * 121 / 2)
    A.shape_eq(chunks_of(5000, 5, { max_seconds = 12 }), { 2, 500 })  -- the cap
    A.shape_eq(chunks_of(100000, 5), { 120, 500 })  -- default cap: 600 s
    A.shape_eq(chunks_of(100000, 5, { max_seconds = math.huge }), { 200, 500 })
    -- 10 s at 22050 Hz, 5 s chunks: the inference setting
    A.shape_eq(audio.chunks(mt.zeros({ 220500 }), 22050, 5), { 2, 110250 })
end)

-- errors ---------------------------------------------------------------------------------

test("errors: missing, empty, not audio, zero frames", function()
    local missing = tmp(".wav")
    A.raises(function() local w = audio.load(missing) return w end,
        "audio.load", missing, "No such file")
    A.raises(function() local i = audio.info(missing) return i end, "audio.info", missing)
    local empty = tmp(".wav")
    write_file(empty, "")
    A.raises(function() local w = audio.load(empty) return w end, empty, "empty (0 bytes)")
    local text = tmp(".wav")
    write_file(text, "a list of recordings, not a recording\n")
    A.raises(function() local w = audio.load(text) return w end, text, "not an audio file")
    local zero = tmp(".wav")
    write_file(zero, wav_bytes(2, 0, 16000, s16))
    A.raises(function() local w = audio.load(zero) return w end, zero, "no audio frames")
end)

test("errors: truncated files", function()
    local full = tmp(".wav")
    write_file(full, wav_bytes(2, 4000, 16000, s16))
    local bytes = read_file(full)
    local cut = tmp(".wav")
    write_file(cut, bytes:sub(1, #bytes // 2))
    A.raises(function() local w = audio.load(cut) return w end, cut, "truncated")
    A.raises(function() local i = audio.info(cut) return i end, cut, "truncated")
    local head = tmp(".wav")
    write_file(head, bytes:sub(1, 30))
    A.raises(function() local w = audio.load(head) return w end, head)
    local flac = tmp(".flac")
    audio.save(flac, (mt.rand({ 2, 40000 }) - 0.5) * 0.5, 16000)
    local fb = read_file(flac)
    local fcut = tmp(".flac")
    write_file(fcut, fb:sub(1, #fb // 2))
    A.raises(function() local w = audio.load(fcut) return w end, fcut, "truncated")
end)

-- A WAV of any fmt tag (1 PCM, 3 float) and sample width, its chunk sizes
-- overridable to lie: opts.data_size, opts.fmt_size.
local function wav_chunks(tag, channels, rate, bits, data, opts)
    opts = opts or {}
    local align = channels * bits // 8
    local fmt = string.pack("<I2I2I4I4I2I2", tag, channels, rate, rate * align, align, bits)
    return "RIFF" .. string.pack("<I4", 4 + 8 + #fmt + 8 + #data) .. "WAVE" ..
        "fmt " .. string.pack("<I4", opts.fmt_size or #fmt) .. fmt ..
        "data" .. string.pack("<I4", opts.data_size or #data) .. data
end

test("errors: a float file holding NaN or Inf is refused, never decoded into a wave", function()
    for _, c in ipairs({ { "<f", 32, 0 / 0, "NaN" }, { "<f", 32, -math.huge, "-Inf" }, { "<d", 64, 0 / 0, "NaN" } }) do
        local samples = {}
        for i = 1, 10 do samples[i] = string.pack(c[1], i == 3 and c[3] or 0.25) end
        local p = tmp(".wav")
        write_file(p, wav_chunks(3, 1, 8000, c[2], table.concat(samples)))
        A.raises(function() local w = audio.load(p) return w end, p, "corrupt", "sample " .. c[4], "frame 3")
        A.raises(function() local w = audio.load(p, { sample_rate = 16000 }) return w end, p, c[4])
        A.eq(audio.load_pcm16(p), nil, "not 16-bit PCM: the cache keeps audio.load's answer")
    end
end)

test("24-bit PCM decodes exactly; load_pcm16 leaves it to audio.load", function()
    local samples, want = {}, {}
    for i = 1, 10 do
        local v = i * 100000 - 4000000
        samples[i] = string.pack("<i3", v)
        want[i] = v / 8388608
    end
    local p = tmp(".wav")
    write_file(p, wav_chunks(1, 1, 8000, 24, table.concat(samples)))
    A.eq(audio.info(p).encoding, "pcm24")
    A.eq(audio.load(p):select(1, 1):totable(), want)
    A.eq(audio.load_pcm16(p), nil)
end)

test("errors: chunk sizes that lie name the file", function()
    local s = {}
    for i = 1, 100 do s[i] = string.pack("<i2", i * 100) end
    local data = table.concat(s)
    local cases = {
        { { data_size = 200000 }, "truncated: its header declares 200000 bytes" },
        { { data_size = 0xFFFFFFF0 }, "truncated" },
        { { fmt_size = 1000 }, "malformed" },
        { { fmt_size = 4 }, "malformed" },
    }
    for _, c in ipairs(cases) do
        local p = tmp(".wav")
        write_file(p, wav_chunks(1, 1, 8000, 16, data, c[1]))
        A.raises(function() local w = audio.load(p) return w end, "audio.load", p, c[2])
        A.raises(function() local w = audio.load_pcm16(p) return w end, p, c[2])
    end
    local p = tmp(".wav")
    write_file(p, wav_chunks(1, 0, 8000, 16, data))
    A.raises(function() local w = audio.load(p) return w end, p, "Channel count is zero")
    write_file(p, wav_chunks(1, 1, 8000, 16, "", { data_size = 2000 }))
    A.raises(function() local w = audio.load(p) return w end, p, "no audio frames")
end)

test("errors: unsupported formats", function()
    local p = tmp(".wav")
    local b = wav_bytes(1, 100, 16000, s16)
    write_file(p, b:sub(1, 20) .. string.pack("<I2", 0x1234) .. b:sub(23))
    A.raises(function() local w = audio.load(p) return w end, p, "unsupported")
    local w = mt.zeros({ 10 })
    local mp3 = tmp(".mp3")
    A.raises(function() audio.save(mp3, w, 16000) end, mp3, "unsupported format 'mp3'")
    A.raises(function() audio.save(tmp(".wav"), w, 16000, { format = "opus" }) end,
        "unsupported format 'opus'")
    A.raises(function() audio.save(tmp(".flac"), w, 16000, { float = true }) end,
        "flac", "float")
    A.raises(function() audio.save(tmp(".wav"), w, 16000, { encoding = "pcm12" }) end,
        "unknown encoding 'pcm12'")
    A.raises(function() audio.save(tmp(".wav"), w, 16000, { float = true, encoding = "pcm16" }) end,
        "contradicts")
end)

test("errors: channel, offset, duration", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(3, 1600, 16000, s16))
    A.raises(function() local w = audio.load(p, { channel = 4 }) return w end,
        p, "channel 4 out of range", "3 channels")
    A.raises(function() local w = audio.load(p, { channel = 0 }) return w end,
        "channel 0 out of range", "3 channels")
    A.raises(function() local w = audio.load(p, { channel = -2 }) return w end,
        "channel -2 out of range")
    A.raises(function() local w = audio.load(p, { channel = 1.5 }) return w end,
        "channel", "integer")
    A.raises(function() local w = audio.load(p, { channel = 1, mono = true }) return w end,
        "mono")
    A.raises(function() local w = audio.load(p, { offset = 0.1 }) return w end,
        p, "offset 0.1 s is beyond the end")
    A.raises(function() local w = audio.load(p, { offset = -1 }) return w end, "offset")
    A.raises(function() local w = audio.load(p, { duration = -0.5 }) return w end,
        p, "duration", "-0.5")
    A.raises(function() local w = audio.load(p, { duration = "1" }) return w end,
        "duration", "number")
    A.raises(function() local w = audio.load(p, { mono = 1 }) return w end, "mono", "boolean")
    A.raises(function() local w = audio.load(p, { chanel = 1 }) return w end,
        "unknown option 'chanel'")
    A.raises(function() local w = audio.load(p, 5) return w end, "table")
end)

test("errors: sample rates", function()
    local p = tmp(".wav")
    write_file(p, wav_bytes(1, 160, 16000, s16))
    local w = mt.zeros({ 100 })
    for _, bad in ipairs({ 0, -16000, 22050.5, 1e12 }) do
        A.raises(function() local x = audio.load(p, { sample_rate = bad }) return x end,
            "sample_rate")
        A.raises(function() local x = audio.resample(w, bad, 16000) return x end,
            "audio.resample", "'from'")
        A.raises(function() local x = audio.resample(w, 16000, bad) return x end,
            "audio.resample", "'to'")
        A.raises(function() audio.save(tmp(".wav"), w, bad) end, "audio.save", "sample rate")
        A.raises(function() local x = audio.chunks(w, bad, 1) return x end, "audio.chunks")
    end
    A.raises(function() local x = audio.resample(w, "fast", 16000) return x end, "'from'")
end)

test("errors: tensors of the wrong rank or type", function()
    A.raises(function() audio.save(tmp(".wav"), mt.zeros({ 2, 3, 4 }), 16000) end,
        "audio.save", "{frames} or {channels, frames}", "3-d")
    A.raises(function() audio.save(tmp(".wav"), mt.tensor(1), 16000) end, "0-d")
    A.raises(function() audio.save(tmp(".wav"), mt.zeros({ 2, 0 }), 16000) end, "no frames")
    A.raises(function() audio.save(tmp(".wav"), mt.zeros({ 4 }, "int64"), 16000) end,
        "float32")
    A.raises(function() local x = audio.resample(mt.tensor(1), 16000, 8000) return x end,
        "audio.resample", "0-d")
    A.raises(function() local x = audio.resample({ 1, 2 }, 16000, 8000) return x end,
        "machrt.Tensor")
    A.raises(function() local x = audio.chunks(mt.zeros({ 2, 100 }), 100, 0.5) return x end,
        "audio.chunks", "{frames}", "2-d")
    A.raises(function() local x = audio.chunks(mt.zeros({ 0 }), 100, 0.5) return x end,
        "no frames")
    A.raises(function() local x = audio.chunks(mt.zeros({ 100 }), 100, 0) return x end,
        "seconds")
    A.raises(function() local x = audio.chunks(mt.zeros({ 100 }), 100, 0.001) return x end,
        "shorter than one frame")
    A.raises(function()
        local x = audio.chunks(mt.zeros({ 100 }), 100, 0.5, { max_seconds = -1 }) return x
    end, "max_seconds")
    A.raises(function()
        local x = audio.chunks(mt.zeros({ 100 }), 100, 0.5, { max_second = 1 }) return x
    end, "unknown option 'max_second'")
end)

-- real MIMII clips --------------------------------------------------------------------------

local function sample_dir()
    local dir = os.getenv("MACHRT_SAMPLE_DATA")
    if not dir or dir == "" then A.skip("MACHRT_SAMPLE_DATA is not set") end
    return dir
end

local function sample_files(dir)
    local files = {}
    local f = io.open(dir .. "/sample.csv")
    if not f then A.skip(dir .. "/sample.csv not found") end
    local header = true
    for line in f:lines() do
        if header then header = false else
            files[#files + 1] = dir .. "/" .. line:match("^[^,]*,([^,]+)")
        end
    end
    f:close()
    return files
end

test("MIMII clips: 8 channels, 16 kHz, 10 s", function()
    local files = sample_files(sample_dir())
    A.eq(#files, 8)
    for _, p in ipairs(files) do
        local info = audio.info(p)
        A.eq({ info.channels, info.sample_rate, info.frames, info.format, info.encoding },
            { 8, 16000, 160000, "wav", "pcm16" }, p)
    end
    local w, sr = audio.load(files[1])
    A.eq(sr, 16000)
    A.shape_eq(w, { 8, 160000 })
    A.truthy(w:abs():max() <= 1 and w:abs():max() > 0, "samples in [-1, 1], not silent")
end)

test("MIMII clip: channel pick, mono, offset/duration against the full decode", function()
    local p = sample_files(sample_dir())[3]
    local all = audio.load(p)
    for _, c in ipairs({ 1, 4, 8 }) do
        A.eq(max_abs_diff(audio.load(p, { channel = c }), all:select(1, c)), 0, "channel " .. c)
    end
    A.truthy(max_abs_diff(audio.load(p, { mono = true }), all:mean(1)) <= 1e-6, "mono")
    local part = audio.load(p, { offset = 2.5, duration = 5 })
    A.shape_eq(part, { 8, 80000 })
    A.eq(max_abs_diff(part, all:narrow(2, 40001, 80000)), 0)
    local tail = audio.load(p, { channel = 2, offset = 9.75 })
    A.shape_eq(tail, { 4000 })
    A.eq(max_abs_diff(tail, all:select(1, 2):narrow(1, 156001, 4000)), 0)
    A.raises(function() local x = audio.load(p, { channel = 9 }) return x end,
        "channel 9 out of range", "8 channels")
    A.raises(function() local x = audio.load(p, { offset = 10 }) return x end,
        "beyond the end")
end)

test("MIMII clip resampled to 22050 Hz and cut into 5 s chunks", function()
    local p = sample_files(sample_dir())[1]
    local w, sr = audio.load(p, { channel = 1, sample_rate = 22050 })
    A.eq(sr, 22050)
    A.shape_eq(w, { 220500 })
    local c = audio.chunks(w, sr, 5)
    A.shape_eq(c, { 2, 110250 })
    A.eq(max_abs_diff(c:select(1, 2), w:narrow(1, 110251, 110250)), 0)
end)

return T
