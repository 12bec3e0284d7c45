-- The system helpers of machrt.sys (atomic writes, file facts, folders,
-- JSON by cJSON, SHA-256 by libcrypto) and the generator state on machrt.

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"

local T = {}

local function tmp()
    local p = os.tmpname()
    os.remove(p)
    return p
end

T[#T + 1] = { "write_file writes whole files and leaves no temporary behind", function()
    local dir = tmp()
    sys.mkdir(dir .. "/a/b")
    local path = dir .. "/a/b/x.txt"
    sys.write_file(path, "first\n")
    sys.write_file(path, "second\n")
    A.eq(io.open(path):read("a"), "second\n")
    local p = io.popen("ls -a '" .. dir .. "/a/b'")
    local names = p:read("a")
    p:close()
    A.eq(names:gsub("%.%.?\n", ""), "x.txt\n", "only the file itself")
    A.raises(function() sys.write_file(dir .. "/missing/y.txt", "z") end, "cannot write", "missing/y.txt")
    local st = sys.stat(path)
    A.eq(st.size, 7)
    A.eq(st.is_dir, false)
    A.eq(sys.stat(dir .. "/a").is_dir, true)
    local none, why = sys.stat(dir .. "/nope")
    A.eq(none, nil)
    A.truthy(why:find("nope", 1, true), why)
    sys.write_file(dir .. "/file", "")
    A.raises(function() sys.mkdir(dir .. "/file") end, "a file is in the way")
    os.execute("rm -rf '" .. dir .. "'")
end }

T[#T + 1] = { "JSON: round trip, sorted keys, empty lists, errors", function()
    local v = { b = { 1, 2.5, "x" }, a = true, c = { d = "q\"uote" }, e = {} }
    local text = sys.json_encode(v)
    A.eq(text, '{"a":true,"b":[1,2.5,"x"],"c":{"d":"q\\"uote"},"e":[]}')
    local back = sys.json_decode(text)
    A.eq(back.b[2], 2.5)
    A.eq(math.type(back.b[1]), "integer")
    A.eq(back.c.d, 'q"uote')
    A.eq(#back.e, 0)
    A.eq(sys.json_encode({ x = 0 / 0 }), '{"x":null}', "NaN has no JSON form")
    A.raises(function() sys.json_decode("{\"a\": [1, 2", "cfg.json") end, "cfg.json: invalid JSON")
    A.raises(function() sys.json_encode({ f = print }) end, "cannot encode a function")
    local t = {}
    t.self = t
    A.raises(function() sys.json_encode(t) end, "nested too deep")
end }

T[#T + 1] = { "read_file: the whole file, or nil and why; read_json raises naming the file", function()
    local dir = tmp()
    sys.mkdir(dir)
    local bytes = "a\0b\n" .. string.rep("x", 100000)
    sys.write_file(dir .. "/bin", bytes)
    A.eq(sys.read_file(dir .. "/bin"), bytes)
    sys.write_file(dir .. "/empty", "")
    A.eq(sys.read_file(dir .. "/empty"), "")
    local text, why = sys.read_file(dir .. "/none")
    A.eq(text, nil)
    A.eq(why, "cannot read " .. dir .. "/none: No such file or directory")
    A.eq(select(2, sys.read_file(dir)), "cannot read " .. dir .. ": a folder")
    sys.write_file(dir .. "/ok.json", '{"a": [1, 2.5], "b": "c"}')
    local v = sys.read_json(dir .. "/ok.json")
    A.eq(v.a[2], 2.5)
    A.eq(v.b, "c")
    A.raises(function() sys.read_json(dir .. "/none") end, "cannot read " .. dir .. "/none: No such file or directory")
    sys.write_file(dir .. "/bad.json", '{"a": ')
    A.raises(function() sys.read_json(dir .. "/bad.json") end, dir .. "/bad.json: invalid JSON")
end }

T[#T + 1] = { "sha256_file matches the FIPS 180-2 test vectors", function()
    local path = tmp()
    sys.write_file(path, "abc")
    A.eq(sys.sha256_file(path), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    sys.write_file(path, "")
    A.eq(sys.sha256_file(path), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    os.remove(path)
    A.raises(function() sys.sha256_file(path) end, "cannot read")
end }

T[#T + 1] = { "rng_state restores the default generator's stream", function()
    mt.manual_seed(42)
    mt.rand{10}
    local s = mt.rng_state()
    local a = mt.rand{5}:totable()
    mt.rand{3}
    mt.set_rng_state(s)
    local b = mt.rand{5}:totable()
    for i = 1, 5 do A.eq(a[i], b[i], "draw " .. i) end
    A.raises(function() mt.set_rng_state({ seed = 1 }) end, "seed and offset")
end }

return T
