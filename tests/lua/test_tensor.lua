-- Tensor construction, queries, element access, conversions and lifetime.

local mt = require "machrt"
local A = require "assert"
local R = require "ref"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

-- Constructors ---------------------------------------------------------------

test("tensor from a nested table", function()
    local x = mt.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
    A.eq(x:shape(), { 2, 3 })
    A.eq(x:dim(), 2)
    A.eq(x:numel(), 6)
    A.eq(x:dtype(), "float32")
    A.eq(x:size(1), 2)
    A.eq(x:size(2), 3)
    A.tensor_near(x, { { 1, 2, 3 }, { 4, 5, 6 } }, 0)
    A.eq(x:get(2, 3), 6)
    A.eq(x:get(1, 2), 2)
end)

test("tensor from a flat list and from deep nesting", function()
    A.tensor_near(mt.tensor({ 1.5, -2, 3 }), { 1.5, -2, 3 }, 0)
    local data = R.values({ 2, 3, 4, 2 })
    local x = mt.tensor(data)
    A.eq(x:shape(), { 2, 3, 4, 2 })
    A.tensor_near(x, data, 0)
end)

test("tensor from a number is 0-d", function()
    local x = mt.tensor(3.5)
    A.eq(x:dim(), 0)
    A.eq(x:shape(), {})
    A.eq(x:numel(), 1)
    A.eq(#x, 1)
    A.eq(x:item(), 3.5)
    A.eq(x:totable(), 3.5)
    A.eq(x:get(), 3.5)
end)

test("tensor stores float32: values come back rounded to float32", function()
    -- 0.1 is not exact in float32; the stored value must be the nearest one.
    local x = mt.tensor({ 0.1, 1 / 3, 1e10 + 1 })
    A.eq(x:get(1), R.f32(0.1))
    A.eq(x:get(2), R.f32(1 / 3))
    A.eq(x:get(3), R.f32(1e10 + 1))
end)

test("tensor with dtype int64", function()
    local x = mt.tensor({ { 1, -2 }, { 3, 40 } }, "int64")
    A.eq(x:dtype(), "int64")
    A.eq(x:shape(), { 2, 2 })
    A.eq(x:get(2, 2), 40)
    A.eq(x:get(1, 2), -2)
    A.eq(x:totable(), { { 1, -2 }, { 3, 40 } })
end)

test("int64 values round-trip exactly and as Lua integers", function()
    -- 2^53 + 1 is not representable as a double: only a true int64 path
    -- keeps it.
    local big = 9007199254740993
    local x = mt.tensor({ big, -big, math.maxinteger, math.mininteger }, "int64")
    A.eq(math.type(x:get(1)), "integer")
    A.eq(x:get(1), big)
    A.eq(x:get(2), -big)
    A.eq(x:get(3), math.maxinteger)
    A.eq(x:get(4), math.mininteger)
    A.eq(x:totable(), { big, -big, math.maxinteger, math.mininteger })
    x:set(big + 2, 1)
    A.eq(x:get(1), big + 2)
    A.eq(mt.tensor(big, "int64"):item(), big)
end)

test("zeros, ones and full", function()
    local z = mt.zeros({ 2, 3 })
    A.eq(z:dtype(), "float32")
    A.tensor_near(z, { { 0, 0, 0 }, { 0, 0, 0 } }, 0)
    A.tensor_near(mt.ones({ 3 }), { 1, 1, 1 }, 0)
    local f = mt.full({ 2, 2 }, 7.5)
    A.eq(f:dtype(), "float32")
    A.tensor_near(f, { { 7.5, 7.5 }, { 7.5, 7.5 } }, 0)
    A.tensor_near(mt.full({ 3 }, -1), { -1, -1, -1 }, 0)
end)

test("shapes given as integer varargs", function()
    A.eq(mt.zeros(2, 3):shape(), { 2, 3 })
    A.eq(mt.ones(4):shape(), { 4 })
    A.tensor_near(mt.ones(2, 1, 2), { { { 1, 1 } }, { { 1, 1 } } }, 0)
    A.eq(mt.rand(3, 2):shape(), { 3, 2 })
    A.eq(mt.randn(2, 5, 1):shape(), { 2, 5, 1 })
end)

test("zeros and ones with dtype int64", function()
    local z = mt.zeros({ 2, 2 }, "int64")
    A.eq(z:dtype(), "int64")
    A.eq(z:totable(), { { 0, 0 }, { 0, 0 } })
    local o = mt.ones({ 3 }, "int64")
    A.eq(o:dtype(), "int64")
    A.eq(o:totable(), { 1, 1, 1 })
    A.eq(math.type(o:get(1)), "integer")
end)

test("rand is uniform in [0, 1)", function()
    mt.manual_seed(1234)
    local x = mt.rand({ 100, 100 })
    A.eq(x:shape(), { 100, 100 })
    A.eq(x:dtype(), "float32")
    local vals = R.flatten(x:totable())
    local lo, hi, s = math.huge, -math.huge, 0
    for _, v in ipairs(vals) do
        lo, hi, s = math.min(lo, v), math.max(hi, v), s + v
    end
    A.truthy(lo >= 0, "min " .. lo .. " < 0")
    A.truthy(hi < 1, "max " .. hi .. " >= 1")
    -- 10000 uniforms: the mean's standard error is ~0.003.
    A.near(s / #vals, 0.5, 0.02, "mean of rand")
    -- Both halves of the range are populated.
    A.truthy(lo < 0.01 and hi > 0.99, "range not covered: " .. lo .. " .. " .. hi)
end)

test("randn is standard normal", function()
    mt.manual_seed(99)
    local vals = R.flatten(mt.randn({ 20000 }):totable())
    A.eq(#vals, 20000)
    local s, ss = 0, 0
    for _, v in ipairs(vals) do s, ss = s + v, ss + v * v end
    local mean = s / #vals
    local std = math.sqrt(ss / #vals - mean * mean)
    A.near(mean, 0, 0.05, "mean of randn")
    A.near(std, 1, 0.05, "std of randn")
    local beyond2 = 0
    for _, v in ipairs(vals) do if math.abs(v) > 2 then beyond2 = beyond2 + 1 end end
    -- P(|z| > 2) = 4.55%.
    A.near(beyond2 / #vals, 0.0455, 0.01, "tail mass of randn")
end)

test("arange(n) counts from 0 as float32", function()
    local x = mt.arange(5)
    A.eq(x:dtype(), "float32")
    A.tensor_near(x, { 0, 1, 2, 3, 4 }, 0)
    A.tensor_near(mt.arange(1), { 0 }, 0)
end)

test("arange(start, stop [, step]) excludes stop", function()
    A.tensor_near(mt.arange(2, 7), { 2, 3, 4, 5, 6 }, 0)
    A.tensor_near(mt.arange(0, 1, 0.25), { 0, 0.25, 0.5, 0.75 }, 0)
    A.tensor_near(mt.arange(1, 10, 3), { 1, 4, 7 }, 0)
    -- ceil((2 - 1) / 0.3) = 4 elements, as PyTorch.
    A.tensor_near(mt.arange(1, 2, 0.3), { 1, 1.3, 1.6, 1.9 }, 1e-6)
    A.tensor_near(mt.arange(5, 0, -1), { 5, 4, 3, 2, 1 }, 0)
    A.tensor_near(mt.arange(-3, -1), { -3, -2 }, 0)
end)

-- Queries --------------------------------------------------------------------

test("shape returns a new list each call", function()
    local x = mt.zeros(2, 3)
    local s1, s2 = x:shape(), x:shape()
    A.truthy(s1 ~= s2, "shape() returned the same table twice")
    s1[1] = 99
    A.eq(x:shape(), { 2, 3 }, "mutating the returned list changed the tensor")
    A.eq(x:size(1), 2)
end)

test("stride and is_contiguous of a fresh tensor", function()
    local x = mt.zeros(2, 3, 4)
    A.eq(x:stride(), { 12, 4, 1 })
    A.eq(x:is_contiguous(), true)
    A.eq(mt.zeros(5):stride(), { 1 })
end)

test("#t is numel", function()
    A.eq(#mt.zeros(2, 3, 4), 24)
    A.eq(mt.zeros(2, 3, 4):numel(), 24)
    A.eq(#mt.tensor({ 1, 2, 3 }), 3)
end)

test("is_tensor", function()
    local x = mt.zeros(2)
    A.eq(mt.is_tensor(x), true)
    A.eq(mt.is_tensor(x:narrow(1, 1, 1)), true)
    A.eq(mt.is_tensor({}), false)
    A.eq(mt.is_tensor(1), false)
    A.eq(mt.is_tensor("x"), false)
    A.eq(mt.is_tensor(nil), false)
    A.eq(mt.is_tensor(io.stdout), false, "a foreign userdata is not a tensor")
end)

test("version, clock and cuda_available", function()
    A.eq(type(mt.version), "string")
    A.truthy(mt.version:match("%d+%.%d+"), "version " .. mt.version .. " has no x.y number")
    local t1 = mt.clock()
    A.eq(math.type(t1), "float")
    local s = 0
    for i = 1, 200000 do s = s + i end
    local t2 = mt.clock()
    A.truthy(t2 >= t1, "clock went backwards")
    A.truthy(t2 - t1 < 60, "clock advanced " .. (t2 - t1) .. " s for a short loop")
    A.eq(type(mt.cuda_available()), "boolean")
end)

-- Element access ---------------------------------------------------------------

test("get and set every element", function()
    local x = mt.zeros(3, 4)
    local want = R.values({ 3, 4 })
    for i = 1, 3 do
        for j = 1, 4 do x:set(want[i][j], i, j) end
    end
    for i = 1, 3 do
        for j = 1, 4 do A.eq(x:get(i, j), want[i][j]) end
    end
    A.tensor_near(x, want, 0)
end)

test("set on a 3-d and a 0-d tensor", function()
    local x = mt.zeros(2, 3, 4)
    x:set(5, 2, 3, 4)
    x:set(-1, 1, 1, 1)
    A.eq(x:get(2, 3, 4), 5)
    A.eq(x:get(1, 1, 1), -1)
    A.eq(x:sum(), 4)
    local s = mt.tensor(1)
    s:set(8)
    A.eq(s:item(), 8)
end)

test("item of one-element tensors", function()
    A.eq(mt.tensor({ { 2.5 } }):item(), 2.5)
    A.eq(mt.tensor({ 7 }):item(), 7)
    A.eq(mt.tensor({ 7 }, "int64"):item(), 7)
end)

test("totable nests like the shape", function()
    local data = R.values({ 2, 1, 3 })
    local t = mt.tensor(data):totable()
    A.eq(R.shape_of(t), { 2, 1, 3 })
    A.eq(t, data)
    -- A fresh table: changing it must not affect the tensor.
    local x = mt.tensor({ 1, 2 })
    x:totable()[1] = 100
    A.eq(x:get(1), 1)
end)

-- Dtype and device conversions -----------------------------------------------

test("long truncates toward zero and float converts back", function()
    local x = mt.tensor({ 1.7, -1.7, 2, -0.5, 3.99 })
    local l = x:long()
    A.eq(l:dtype(), "int64")
    A.eq(l:totable(), { 1, -1, 2, 0, 3 })
    A.eq(x:dtype(), "float32", "long() must not change the source")
    local f = l:float()
    A.eq(f:dtype(), "float32")
    A.tensor_near(f, { 1, -1, 2, 0, 3 }, 0)
end)

test("float and long are copies", function()
    local x = mt.tensor({ 1, 2, 3 })
    local l = x:long()
    l:set(10, 1)
    A.eq(x:get(1), 1, "writing the long copy changed the source")
    local f = l:float()
    f:set(20, 2)
    A.eq(l:get(2), 2, "writing the float copy changed the source")
end)

test("long and float of views", function()
    local x = mt.tensor({ { 1.5, 2.5, 3.5 }, { 4.5, 5.5, 6.5 } }):transpose(1, 2)
    A.eq(x:long():totable(), { { 1, 4 }, { 2, 5 }, { 3, 6 } })
    A.tensor_near(x:long():float(), { { 1, 4 }, { 2, 5 }, { 3, 6 } }, 0)
end)

test("device and to('cpu')", function()
    local x = mt.tensor({ { 1, 2 }, { 3, 4 } })
    A.eq(x:device(), "cpu")
    local y = x:to("cpu")
    A.eq(mt.is_tensor(y), true)
    A.eq(y:device(), "cpu")
    A.tensor_near(y, { { 1, 2 }, { 3, 4 } }, 0)
end)

test("to('cuda') errors without CUDA, round-trips with it", function()
    local x = mt.tensor({ 1, 2, 3 })
    if mt.cuda_available() then
        local g = x:to("cuda")
        A.eq(g:device(), "cuda")
        local back = g:to("cpu")
        A.eq(back:device(), "cpu")
        A.tensor_near(back, { 1, 2, 3 }, 0)
    else
        local msg = A.raises(function() local g = x:to("cuda"); return g end)
        A.truthy(msg:lower():find("cuda", 1, true), "message does not mention cuda: " .. msg)
        A.eq(x:device(), "cpu", "a failed to() must leave the tensor alone")
        A.tensor_near(x, { 1, 2, 3 }, 0)
    end
end)

-- Printing ---------------------------------------------------------------------

test("tostring shows values and the size footer", function()
    local s = tostring(mt.tensor({ { 1.5, 2, 3 }, { 4, 5, 6.25 } }))
    A.truthy(s:find("1.5", 1, true), "no 1.5 in:\n" .. s)
    A.truthy(s:find("6.25", 1, true), "no 6.25 in:\n" .. s)
    A.truthy(s:find("machrt.FloatTensor", 1, true), "no type name in:\n" .. s)
    A.truthy(s:find("of size 2x3", 1, true), "no 'of size 2x3' in:\n" .. s)
    -- Rows appear in order.
    A.truthy(s:find("1.5", 1, true) < s:find("6.25", 1, true), "values out of order:\n" .. s)
end)

test("tostring of int64 and 1-d tensors", function()
    local s = tostring(mt.tensor({ 7, 123456789 }, "int64"))
    A.truthy(s:find("machrt.LongTensor", 1, true), "no LongTensor in:\n" .. s)
    A.truthy(s:find("123456789", 1, true), "value missing in:\n" .. s)
    A.truthy(s:find("of size 2", 1, true), "no 'of size 2' in:\n" .. s)
    local v = tostring(mt.arange(4))
    A.truthy(v:find("of size 4", 1, true), "no 'of size 4' in:\n" .. v)
    A.truthy(v:find("3", 1, true), "value 3 missing in:\n" .. v)
end)

test("tostring of a non-contiguous view shows its logical values", function()
    local x = mt.tensor({ { 11, 12 }, { 13, 14 } }):transpose(1, 2)
    local s = tostring(x)
    -- Logical row-major order after the transpose: 11 13 12 14.
    local p11, p13, p12 = s:find("11", 1, true), s:find("13", 1, true), s:find("12", 1, true)
    A.truthy(p11 and p13 and p12 and p11 < p13 and p13 < p12, "wrong order in:\n" .. s)
end)

-- Lifetime -----------------------------------------------------------------------

test("to-be-closed tensors", function()
    do
        local x <close> = mt.zeros(100, 100)
        x:fill(1)
        A.eq(x:sum(), 10000)
    end
    collectgarbage("collect")
end)

test("a closed tensor is unusable with a clear error", function()
    local escaped
    do
        local x <close> = mt.ones(3)
        escaped = x
    end
    local ok, err = pcall(function() local s = escaped:sum(); return s end)
    A.eq(ok, false, "using a closed tensor did not error")
    A.contains_any(tostring(err), { "closed", "released" })
    ok, err = pcall(function() local v = escaped:get(1); return v end)
    A.eq(ok, false, "get on a closed tensor did not error")
    A.contains_any(tostring(err), { "closed", "released" })
    -- Printing it must not crash, whatever it prints; nor must collecting it.
    pcall(tostring, escaped)
    escaped = nil
    collectgarbage("collect")
end)

test("a view outlives its closed base", function()
    local view
    do
        local base <close> = mt.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
        view = base:select(1, 2)
    end
    collectgarbage("collect")
    A.tensor_near(view, { 4, 5, 6 }, 0)
    view:fill(0)
    A.eq(view:sum(), 0)
end)

test("many tensors are collected without trouble", function()
    local keep = mt.zeros(10)
    for i = 1, 2000 do
        local x = mt.ones(64, 64)
        local v = x:narrow(1, 1, 2):transpose(1, 2)
        if i % 500 == 0 then keep:add_(v:sum() / 128) end
    end
    collectgarbage("collect")
    collectgarbage("collect")
    A.tensor_near(keep, R.gen({ 10 }, function() return 4 end), 0)
end)

test("float to int64 truncates toward zero; NaN, infinities and values past 2^63 are refused, named", function()
    local l = mt.tensor{1.7, -2.9, 3e9, -0.5}:long()
    A.eq(l:dtype(), "int64")
    A.eq(l:totable(), {1, -2, 3000000000, 0})
    for _, bad in ipairs{0 / 0, 1 / 0, -1 / 0, 1e19, -1e19} do
        local ok, err = pcall(function() return mt.tensor{1, bad}:long() end)
        A.eq(ok, false, "converted " .. tostring(bad))
        A.truthy(tostring(err):find("copy to int64: the float32 source holds", 1, true), tostring(err))
    end
    local dst = mt.tensor({0, 0}, "int64")
    A.eq(pcall(dst.copy, dst, mt.tensor{0 / 0, 1}), false, "copy into an int64 tensor refuses a NaN too")
end)

test("a tensor larger than the memory available is refused, naming its size, not left to the OOM killer", function()
    local f = assert(io.open("/proc/meminfo"))
    local info = f:read("a")
    f:close()
    local avail = (tonumber(info:match("MemAvailable:%s+(%d+)")) + tonumber(info:match("SwapFree:%s+(%d+)") or "0"))
                  * 1024
    -- 1 GB past what is available: the kernel's overcommit would grant an
    -- untouched block of that size, or refuse it with a bare ENOMEM
    local floats = math.floor((avail + 1e9) / 4)
    local msg = A.raises(function() return mt.empty({floats}) end, "out-of-memory killer", "MemAvailable")
    A.truthy(msg:find(("%d bytes"):format(floats * 4), 1, true), msg)
    A.eq(mt.empty({1024}):numel(), 1024, "small tensors are unaffected")
end)

return T
