-- safetensors save/load, random seeding and thread-count independence.

local mt = require "machrt"
local A = require "assert"
local R = require "ref"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local FIXTURE = "tests/fixtures/python_written.safetensors"

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local function write_file(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
end

-- Runs fn(path) with a fresh temporary path and removes the file afterwards,
-- whether fn succeeds or not.
local function with_tmp(fn)
    local path = os.tmpname()
    local ok, err = pcall(fn, path)
    os.remove(path)
    if not ok then error(err, 0) end
end

-- Splits a safetensors file into its parsed header entries and data bytes.
-- A deliberately small parser that understands exactly the layout the
-- format prescribes: u64 LE header length, a JSON object of
-- name -> {dtype, shape, data_offsets}, then the data buffer.
local function parse_safetensors(bytes)
    local n = string.unpack("<I8", bytes)
    local header = bytes:sub(9, 8 + n)
    local data = bytes:sub(9 + n)
    local entries = {}
    for name, body in header:gmatch('"([^"]+)"%s*:%s*(%b{})') do
        if name ~= "__metadata__" then
            local e = { dtype = body:match('"dtype"%s*:%s*"(%w+)"'), shape = {}, offsets = {} }
            for v in body:match('"shape"%s*:%s*(%b[])'):gmatch("%d+") do
                e.shape[#e.shape + 1] = tonumber(v)
            end
            for v in body:match('"data_offsets"%s*:%s*(%b[])'):gmatch("%d+") do
                e.offsets[#e.offsets + 1] = tonumber(v)
            end
            entries[name] = e
        end
    end
    return entries, data, n
end

-- Decodes one entry's elements from the data buffer as a flat list.
local function decode(entry, data)
    local fmt, size = "<f", 4
    if entry.dtype == "I64" then fmt, size = "<i8", 8 end
    local vals = {}
    for pos = entry.offsets[1] + 1, entry.offsets[2], size do
        vals[#vals + 1] = string.unpack(fmt, data, pos)
    end
    return vals
end

-- Builds a safetensors file by hand (header padded with spaces to a multiple
-- of 8, as the reference writer does). tensors: list of
-- {name, dtype ("F32"/"I64"), shape, flat values}.
local function encode(tensors, metadata)
    local parts, blobs, offset = {}, {}, 0
    if metadata then parts[#parts + 1] = '"__metadata__":' .. metadata end
    for _, t in ipairs(tensors) do
        local fmt = (t[2] == "I64") and "<i8" or "<f"
        local buf = {}
        for i, v in ipairs(t[4]) do buf[i] = string.pack(fmt, v) end
        local blob = table.concat(buf)
        parts[#parts + 1] = string.format('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}',
            t[1], t[2], table.concat(t[3], ","), offset, offset + #blob)
        offset = offset + #blob
        blobs[#blobs + 1] = blob
    end
    local header = "{" .. table.concat(parts, ",") .. "}"
    header = header .. string.rep(" ", (8 - #header % 8) % 8)
    return string.pack("<I8", #header) .. header .. table.concat(blobs)
end

-- save / load ------------------------------------------------------------------

test("save and load round trip", function()
    with_tmp(function(path)
        local w = R.values({ 3, 4 })
        local big = 9007199254740993
        mt.save(path, {
            weight = mt.tensor(w),
            bias = mt.tensor({ 0.5, -1.25 }),
            idx = mt.tensor({ { 1, -2 }, { big, 0 } }, "int64"),
        })
        local t = mt.load(path)
        A.eq(type(t), "table")
        local names = {}
        for k in pairs(t) do names[#names + 1] = k end
        table.sort(names)
        A.eq(names, { "bias", "idx", "weight" })
        A.eq(t.weight:dtype(), "float32")
        A.tensor_near(t.weight, w, 0)
        A.tensor_near(t.bias, { 0.5, -1.25 }, 0)
        A.eq(t.idx:dtype(), "int64")
        A.eq(t.idx:totable(), { { 1, -2 }, { big, 0 } })
    end)
end)

test("loaded tensors are independent of each other and of the saved ones", function()
    with_tmp(function(path)
        local a = mt.tensor({ 1, 2, 3 })
        mt.save(path, { a = a, b = mt.tensor({ 4, 5 }) })
        local t = mt.load(path)
        t.a:fill(0)
        A.tensor_near(t.b, { 4, 5 }, 0)
        A.tensor_near(a, { 1, 2, 3 }, 0)
        A.tensor_near(mt.load(path).a, { 1, 2, 3 }, 0)
    end)
end)

test("save writes non-contiguous views in logical order", function()
    with_tmp(function(path)
        local d = R.values({ 3, 5 })
        mt.save(path, {
            t = mt.tensor(d):transpose(1, 2),
            n = mt.tensor(d):narrow(2, 2, 2),
            e = mt.tensor({ { 1 }, { 2 } }):expand({ 2, 3 }),
        })
        local t = mt.load(path)
        A.tensor_near(t.t, R.transpose(d, 1, 2), 0)
        A.tensor_near(t.n, R.gen({ 3, 2 }, function(i) return d[i[1]][i[2] + 1] end), 0)
        A.tensor_near(t.e, { { 1, 1, 1 }, { 2, 2, 2 } }, 0)
        A.eq(t.t:is_contiguous(), true)
    end)
end)

test("save and load a 0-d tensor", function()
    with_tmp(function(path)
        mt.save(path, { s = mt.tensor(2.5) })
        local s = mt.load(path).s
        A.eq(s:dim(), 0)
        A.eq(s:item(), 2.5)
    end)
end)

test("the saved file is standard safetensors", function()
    with_tmp(function(path)
        mt.save(path, {
            w = mt.tensor({ { 1.5, -2 }, { 0.25, 8 } }),
            i = mt.tensor({ 7, -9, 123456789012 }, "int64"),
        })
        local bytes = read_file(path)
        local entries, data, n = parse_safetensors(bytes)
        A.eq((8 + n) % 8, 0, "header not padded to a multiple of 8")
        A.truthy(entries.w and entries.i, "tensor entries missing from the header")
        A.eq(entries.w.dtype, "F32")
        A.eq(entries.w.shape, { 2, 2 })
        A.eq(entries.w.offsets[2] - entries.w.offsets[1], 16)
        A.eq(decode(entries.w, data), { 1.5, -2, 0.25, 8 })
        A.eq(entries.i.dtype, "I64")
        A.eq(entries.i.shape, { 3 })
        A.eq(decode(entries.i, data), { 7, -9, 123456789012 })
    end)
end)

test("load reads a hand-written file with metadata", function()
    with_tmp(function(path)
        write_file(path, encode({
            { "a.weight", "F32", { 2, 3 }, { 1, 2, 3, 4, 5, 6.5 } },
            { "count", "I64", { 1 }, { 42 } },
            { "s", "F32", {}, { -0.75 } },
        }, '{"format":"pt"}'))
        local t = mt.load(path)
        A.tensor_near(t["a.weight"], { { 1, 2, 3 }, { 4, 5, 6.5 } }, 0)
        A.eq(t.count:dtype(), "int64")
        A.eq(t.count:totable(), { 42 })
        A.eq(t.s:item(), -0.75)
        A.eq(t.__metadata__, nil, "metadata is not a tensor")
    end)
end)

test("load rejects a missing or corrupt file", function()
    A.raises(function() local t = mt.load("/nonexistent/dir/x.safetensors"); return t end)
    with_tmp(function(path)
        -- Header length far beyond the file size.
        write_file(path, string.pack("<I8", 1 << 40) .. "{}")
        A.raises(function() local t = mt.load(path); return t end)
        -- Data offsets beyond the data buffer.
        local good = encode({ { "x", "F32", { 4 }, { 1, 2, 3, 4 } } })
        write_file(path, good:sub(1, #good - 8))
        A.raises(function() local t = mt.load(path); return t end)
    end)
end)

-- Headers that lie about the bytes after them; the reader's cases in full
-- are in tests/c/test_safetensors.c, these check what reaches Lua.
test("load names the file and the tensor for a header that lies", function()
    with_tmp(function(path)
        local data = string.rep(string.pack("<f", 1), 4)
        local function header(entry)
            local h = "{" .. entry .. "}"
            h = h .. string.rep(" ", (8 - #h % 8) % 8)
            return string.pack("<I8", #h) .. h .. data
        end
        local cases = {
            { '"x":{"dtype":"F32","shape":[4],"data_offsets":[0,64]}', "x" },    -- past the end
            { '"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}', "x" },    -- 12 bytes of shape, 16 given
            { '"x":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]}', "x" }, -- negative size
            { '"x":{"dtype":"F99","shape":[4],"data_offsets":[0,16]}', "F99" },  -- no such dtype
            { '"x":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}', "x" },    -- end before start
            { '"x":{"dtype":"F32","shape":[4]}', "x" },                           -- no offsets
        }
        for _, c in ipairs(cases) do
            write_file(path, header(c[1]))
            A.raises(function() local t = mt.load(path); return t end, "safetensors", path, c[2])
        end
    end)
end)

test("save rejects values that are not tensors", function()
    with_tmp(function(path)
        A.raises(function() mt.save(path, { x = 3 }) end)
    end)
end)

test("python-written fixture", function()
    local f = io.open(FIXTURE, "rb")
    if not f then A.skip(FIXTURE .. " not present") end
    f:close()
    local t = mt.load(FIXTURE)

    A.eq(t.weight:dtype(), "float32")
    A.tensor_near(t.weight, R.gen({ 3, 4 }, function(_, k) return (k - 1) * 0.5 - 2 end), 0)
    A.tensor_near(t.bias, R.gen({ 4 }, function(_, k) return R.f32(k / 3) end), 0)
    A.eq(t.scale:dim(), 0)
    A.eq(t.scale:item(), 3.25)
    A.tensor_near(t["layer1.0.conv1.weight"],
        R.gen({ 2, 1, 3, 3 }, function(_, k) return (k - 1) / 8 - 1 end), 0)
    A.eq(t.steps:dtype(), "int64")
    A.eq(t.steps:totable(), R.gen({ 2, 3 }, function(_, k) return (k - 1 - 3) * 1000000000000 end))
    A.eq(t.ids:dtype(), "int64")
    A.eq(t.ids:totable(), { -7, -6, -3, 2, 9 })
    A.eq(t.empty:shape(), { 0, 3 })
    A.eq(t.empty:numel(), 0)
    A.eq(t.__metadata__, nil, "metadata is not a tensor")
end)

test("python-written fixture survives a save/load round trip", function()
    local f = io.open(FIXTURE, "rb")
    if not f then A.skip(FIXTURE .. " not present") end
    f:close()
    local t = mt.load(FIXTURE)
    t.empty = nil        -- zero-element tensors are covered by the load test
    with_tmp(function(path)
        mt.save(path, t)
        local back = mt.load(path)
        for name, x in pairs(t) do
            A.truthy(back[name], name .. " missing after the round trip")
            A.eq(back[name]:dtype(), x:dtype(), name)
            A.eq(back[name]:totable(), x:totable(), name)
        end
    end)
end)

-- Random numbers -----------------------------------------------------------------

test("manual_seed makes rand and randn reproducible", function()
    mt.manual_seed(42)
    local a = mt.rand({ 50 }):totable()
    local an = mt.randn({ 3, 7 }):totable()
    mt.manual_seed(42)
    local b = mt.rand({ 50 }):totable()
    local bn = mt.randn({ 3, 7 }):totable()
    A.eq(b, a, "rand after the same seed")
    A.eq(bn, an, "randn after the same seed")
end)

test("different seeds and successive draws differ", function()
    mt.manual_seed(1)
    local a = mt.rand({ 20 }):totable()
    local a2 = mt.rand({ 20 }):totable()
    mt.manual_seed(2)
    local b = mt.rand({ 20 }):totable()
    local function differs(x, y)
        for i = 1, #x do if x[i] ~= y[i] then return true end end
        return false
    end
    A.truthy(differs(a, b), "seeds 1 and 2 gave the same rand values")
    A.truthy(differs(a, a2), "two draws after one seed were identical")
    mt.manual_seed(1)
    local n1 = mt.randn({ 20 }):totable()
    mt.manual_seed(2)
    A.truthy(differs(n1, mt.randn({ 20 }):totable()), "seeds 1 and 2 gave the same randn values")
end)

-- Threads ----------------------------------------------------------------------

test("set_num_threads and get_num_threads", function()
    local before = mt.get_num_threads()
    A.eq(math.type(before), "integer")
    A.truthy(before >= 1, "get_num_threads() = " .. before)
    mt.set_num_threads(1)
    A.eq(mt.get_num_threads(), 1)
    mt.set_num_threads(2)
    A.eq(mt.get_num_threads(), 2)
    mt.set_num_threads(before)
    A.eq(mt.get_num_threads(), before)
end)

test("results do not depend on the thread count", function()
    local before = mt.get_num_threads()
    -- Large enough that a parallel kernel really splits the work.
    local shape = { 512, 1024 }
    local function run(threads)
        mt.set_num_threads(threads)
        mt.manual_seed(7)
        local r = mt.rand(shape)
        local n = mt.randn(shape)
        local m = mt.rand({ 96, 80 }):matmul(mt.rand({ 80, 64 }))
        return {
            rand = r, randn = n,
            sum = r:sum(), nsum = n:sum(), mean = n:mean(),
            rowsum = r:sum(2):totable(), colmax = n:max(1):totable(),
            mm = m:totable(),
        }
    end
    local ok, err = pcall(function()
        local one, two = run(1), run(2)
        A.eq(two.rand:totable(), one.rand:totable(), "rand values with 1 vs 2 threads")
        A.eq(two.randn:totable(), one.randn:totable(), "randn values with 1 vs 2 threads")
        A.eq(two.sum, one.sum, "sum with 1 vs 2 threads")
        A.eq(two.nsum, one.nsum, "randn sum with 1 vs 2 threads")
        A.eq(two.mean, one.mean, "mean with 1 vs 2 threads")
        A.eq(two.rowsum, one.rowsum, "sum(2) with 1 vs 2 threads")
        A.eq(two.colmax, one.colmax, "max(1) with 1 vs 2 threads")
        -- BLAS may legitimately reorder additions across threads; near only.
        local f1, f2 = R.flatten(one.mm), R.flatten(two.mm)
        for i = 1, #f1 do A.near(f2[i], f1[i], 1e-5, "matmul with 1 vs 2 threads") end
    end)
    mt.set_num_threads(before)
    if not ok then error(err, 0) end
end)

return T
