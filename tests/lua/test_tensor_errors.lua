-- Error reporting: every failure is a Lua error "<op>: <detail>" that names
-- the operation and the offending shapes or values. The tests check those
-- pieces as substrings rather than the exact wording.
--
-- Calls inside the closures are assigned to a local instead of returned:
-- `return f(x)` is a tail call, and Lua then cannot name f in
-- "bad argument" messages.

local mt = require "machrt"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

-- Constructors -----------------------------------------------------------------------

test("ragged nesting", function()
    A.raises(function() local x = mt.tensor({ { 1, 2 }, { 3 } }); return x end, "tensor:")
    A.raises(function() local x = mt.tensor({ { 1, 2 }, 3 }); return x end, "tensor:")
    A.raises(function() local x = mt.tensor({ 1, { 2, 3 } }); return x end, "tensor:")
    A.raises(function() local x = mt.tensor({ { { 1 }, { 2 } }, { { 3 }, { 4, 5 } } }); return x end, "tensor:")
end)

test("non-numeric elements and unknown dtypes", function()
    A.raises(function() local x = mt.tensor({ 1, "a" }); return x end, "tensor")
    A.raises(function() local x = mt.tensor({ 1, 2 }, "float16"); return x end, "float16")
    A.raises(function() local x = mt.zeros({ 2 }, "complex"); return x end, "complex")
end)

test("bad shapes", function()
    A.raises(function() local x = mt.zeros({ 2, -3 }); return x end, "-3")
    A.raises(function() local x = mt.zeros("a"); return x end, "bad argument", "zeros")
    A.raises(function() local x = mt.ones({ 2, "x" }); return x end, "ones")
end)

-- Element access -----------------------------------------------------------------

test("get index out of range", function()
    local x = mt.zeros(3, 4)
    A.raises(function() local v = x:get(5, 1); return v end, "get:", "index 5", "dimension 1", "size 3")
    A.raises(function() local v = x:get(1, 5); return v end, "get:", "index 5", "dimension 2", "size 4")
    A.raises(function() local v = x:get(0, 1); return v end, "get:", "0")
    A.raises(function() local v = x:get(-1, 1); return v end, "get:")
end)

test("get with the wrong number of indices", function()
    local x = mt.zeros(3, 4)
    A.raises(function() local v = x:get(1); return v end, "get:", "expected 2 indices", "got 1")
    A.raises(function() local v = x:get(1, 1, 1); return v end, "get:", "2", "3")
    A.raises(function() local v = x:get(1.5, 1); return v end, "bad argument", "get")
    A.raises(function() local v = x:get("a", 1); return v end, "bad argument", "get")
end)

test("set out of range or with the wrong number of indices", function()
    local x = mt.zeros(3, 4)
    A.raises(function() x:set(1, 4, 1) end, "set:", "4", "3")
    A.raises(function() x:set(1, 1) end, "set:", "2", "1")
    A.raises(function() x:set("v", 1, 1) end, "bad argument", "set")
    A.eq(x:sum(), 0, "a failed set wrote something")
end)

test("size out of range", function()
    local x = mt.zeros(3, 4)
    A.raises(function() local s = x:size(3); return s end, "3")
    A.raises(function() local s = x:size(0); return s end, "0")
end)

test("item of a tensor with more than one element", function()
    A.raises(function() local v = mt.zeros(2, 3):item(); return v end, "item:", "6")
    A.raises(function() local v = mt.zeros(2):item(); return v end, "item:", "2")
end)

-- Views --------------------------------------------------------------------------

test("reshape to a different element count", function()
    local x = mt.zeros(2, 3)
    local msg = A.raises(function() local r = x:reshape({ 4, 2 }); return r end, "reshape:")
    A.contains_any(msg, { "2x3", "6" }, "source shape or count")
    A.contains_any(msg, { "4x2", "8" }, "target shape or count")
    msg = A.raises(function() local r = x:reshape({ 4, -1 }); return r end, "reshape:")
    A.contains_any(msg, { "2x3", "6" })
    A.raises(function() local r = x:reshape({ -1, -1 }); return r end, "reshape:")
end)

test("transpose with a dimension out of range", function()
    local x = mt.zeros(2, 3)
    A.raises(function() local t = x:transpose(1, 3); return t end, "transpose:", "dimension 3", "out of range")
    A.raises(function() local t = x:transpose(0, 1); return t end, "transpose:", "0")
end)

test("permute with an invalid order", function()
    local x = mt.zeros(2, 3, 4)
    A.raises(function() local p = x:permute({ 1, 2 }); return p end, "permute:")
    A.raises(function() local p = x:permute({ 1, 1, 2 }); return p end, "permute:")
    A.raises(function() local p = x:permute({ 1, 2, 4 }); return p end, "permute:", "4")
    A.raises(function() local p = x:permute({ 1, 2, 3, 4 }); return p end, "permute:")
end)

test("narrow out of range", function()
    local x = mt.zeros(3, 5)
    A.raises(function() local n = x:narrow(2, 4, 3); return n end, "narrow:", "5")
    A.raises(function() local n = x:narrow(2, 0, 2); return n end, "narrow:")
    A.raises(function() local n = x:narrow(3, 1, 1); return n end, "narrow:", "3")
    A.raises(function() local n = x:narrow(1, 1, -1); return n end, "narrow:")
end)

test("select out of range", function()
    local x = mt.zeros(3, 5)
    A.raises(function() local s = x:select(1, 4); return s end, "select:", "4", "3")
    A.raises(function() local s = x:select(2, 0); return s end, "select:")
    A.raises(function() local s = x:select(3, 1); return s end, "select:", "3")
end)

test("expand of a dimension that is not size 1", function()
    local x = mt.zeros(2, 3)
    local msg = A.raises(function() local e = x:expand({ 4, 3 }); return e end, "expand:")
    A.contains_any(msg, { "2x3" })
    A.contains_any(msg, { "4x3" })
    A.raises(function() local e = x:expand({ 3 }); return e end, "expand:")
end)

test("copy from a source that does not broadcast", function()
    local x = mt.zeros(2, 3)
    A.raises(function() x:copy(mt.zeros(4)) end, "copy:", "2x3", "4")
    A.raises(function() x:copy(mt.zeros(3, 3)) end, "copy:", "2x3", "3x3")
    -- The source may broadcast to self, not the other way round.
    A.raises(function() mt.zeros(3):copy(mt.zeros(2, 3)) end, "copy:", "2x3")
end)

-- Arithmetic ---------------------------------------------------------------------

test("add with shapes that cannot broadcast", function()
    local a, b = mt.zeros(2, 3), mt.zeros(4)
    A.raises(function() local c = a:add(b); return c end, "add:", "2x3", "4", "broadcast")
    A.raises(function() local c = a + b; return c end, "add", "2x3", "4")
    A.raises(function() local c = mt.zeros(2, 3):mul(mt.zeros(3, 2)); return c end, "mul:", "2x3", "3x2")
    A.raises(function() local c = mt.zeros(2, 3) - mt.zeros(2); return c end, "sub", "2x3")
    A.raises(function() local c = mt.zeros(2, 3) / mt.zeros(3, 3); return c end, "div", "2x3", "3x3")
    A.raises(function() local c = mt.zeros(5):maximum(mt.zeros(4)); return c end, "maximum:", "5", "4")
end)

test("in-place op whose operand would grow self", function()
    local x = mt.zeros(3)
    A.raises(function() x:add_(mt.zeros(2, 3)) end, "add", "2x3")
    A.raises(function() x:mul_(mt.zeros(4)) end, "mul", "3", "4")
    A.eq(x:shape(), { 3 }, "a failed in-place op changed the shape")
end)

test("bad operand types", function()
    local x = mt.zeros(2)
    A.raises(function() local c = x:add("x"); return c end, "bad argument #1 to 'add'")
    A.raises(function() local c = x:mul({}); return c end, "bad argument #1 to 'mul'")
    A.raises(function() local c = x + "x"; return c end)
    A.raises(function() local c = x * true; return c end)
    A.raises(function() local s = x.sum(5); return s end, "bad argument", "sum")
end)

test("matmul with mismatched shapes names both", function()
    A.raises(function() local c = mt.zeros(2, 3):matmul(mt.zeros(4, 5)); return c end,
        "matmul:", "2x3", "4x5")
    A.raises(function() local c = mt.zeros(2, 3, 4):matmul(mt.zeros(3, 4, 5)); return c end,
        "matmul:", "2x3x4", "3x4x5")
    A.raises(function() local c = mt.zeros(3):matmul(mt.zeros(4)); return c end, "matmul:", "3", "4")
    A.raises(function() local c = mt.tensor(1):matmul(mt.zeros(2, 2)); return c end, "matmul:")
end)

test("arithmetic on int64 tensors", function()
    local l = mt.tensor({ 1, 2 }, "int64")
    A.raises(function() local c = l:add(1); return c end, "int64")
    A.raises(function() local c = l + l; return c end, "int64")
    A.raises(function() local c = l * 2; return c end, "int64")
    A.raises(function() local c = l:exp(); return c end, "int64")
    A.raises(function() local c = mt.zeros(2) + l; return c end, "int64")
    A.raises(function() local c = l:matmul(l); return c end, "int64")
    A.raises(function() l:add_(1) end, "int64")
    A.eq(l:totable(), { 1, 2 }, "a failed op changed the tensor")
end)

-- Reductions ---------------------------------------------------------------------

test("reduction over a dimension out of range", function()
    local x = mt.zeros(2, 3)
    A.raises(function() local s = x:sum(3); return s end, "sum", "3")
    A.raises(function() local s = x:mean(0); return s end, "mean", "0")
    A.raises(function() local s = x:max(3); return s end, "max", "3")
    A.raises(function() local s = x:argmax(5); return s end, "argmax", "5")
end)

-- I/O and devices ------------------------------------------------------------------

test("to an unknown device", function()
    A.raises(function() local y = mt.zeros(2):to("tpu"); return y end, "tpu")
end)

return T
