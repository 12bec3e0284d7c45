-- Writes the seed corpora of the fuzz targets (tests/fuzz/seeds/<target>/):
-- small valid files of each kind, so the fuzzer starts from inputs that get
-- past the first checks. `./machrt tests/fuzz/make_seeds.lua`; the output is
-- committed, so `make fuzz` needs no generation step.
local mt = require "machrt"
local audio = require "machrt.audio"

local ROOT = "tests/fuzz/seeds"
for _, t in ipairs{ "safetensors", "audio", "csv" } do mt.mkdir(ROOT .. "/" .. t) end

-- safetensors: F32 and I64 tensors of a few shapes, with and without metadata.
local st = ROOT .. "/safetensors/"
mt.save(st .. "one_f32.safetensors", { w = mt.tensor{ { 1, 2 }, { 3, 4 } } })
mt.save(st .. "mixed.safetensors", { a = mt.arange(3), b = mt.zeros{ 2, 1, 2 }, s = mt.tensor{ 0.5 } },
        { format = "pt", note = "seed" })
mt.save(st .. "empty_tensor.safetensors", { e = mt.zeros{ 0, 3 } })
mt.save(st .. "i64.safetensors", { i = mt.tensor{ 1, -2, 3 }:long() })

-- audio: 20 ms clips in each format audio.save writes, mono and stereo.
local a = ROOT .. "/audio/"
mt.manual_seed(1)
local mono = mt.randn{ 1, 320 } * 0.2
local stereo = mt.randn{ 2, 160 } * 0.2
audio.save(a .. "pcm16.wav", mono, 16000)
audio.save(a .. "float_stereo.wav", stereo, 8000, { float = true })
audio.save(a .. "pcm24.aiff", stereo, 16000, { encoding = "pcm24" })
audio.save(a .. "mono.flac", mono, 16000)
audio.save(a .. "mono.ogg", mt.randn{ 1, 1600 } * 0.2, 16000)

-- csv: what the reader promises to handle (RFC 4180 quoting, CRLF, BOM,
-- an empty header cell, blank lines, a missing final newline).
local function text(name, s) mt.write_file(ROOT .. "/csv/" .. name, s) end
text("reference.csv", ",audio,label,model_id,condition\n0,fan/id_00/normal/00000000.wav,fan,00,normal\n1,pump/a.wav,pump,02,abnormal\n")
text("quoted.csv", 'a,b,c\n"x, y","say ""hi""","multi\nline"\n1,,3\n')
text("crlf_bom.csv", "\239\187\191file,label\r\na.wav,fan\r\n\r\nb.wav,valve")
text("one_column.csv", 'x\n""\n1\n')
-- mono.mp3 (2000 frames of a 255 Hz tone at 16 kHz) is not written here:
-- audio.save has no MP3 encoder; it was written once through libsndfile's
-- own (sf_open with SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III).
