-- A short tour of the machrt tensor API: `./machrt examples/tour.lua`.
local mt = require "machrt"

mt.manual_seed(1)
local x = mt.arange(12):reshape{3, 4}
print("x =") print(x)
print("x:transpose(1, 2) is a view; its shape:", table.concat(x:transpose(1, 2):shape(), "x"))
print("column sums:") print(x:sum(1))
print("row means:") print(x:mean(2))

local w = mt.randn{4, 2}
local y = (x:matmul(w) + 1):sigmoid()
print("sigmoid(x @ w + 1) =") print(y)
local values, index = y:max(2)
print("row max and its 1-based column:") print(values) print(index)

local path = os.tmpname()
mt.save(path, {x = x, w = w}, {note = "tour"})
local loaded, meta = mt.load(path)
os.remove(path)
print(("safetensors round trip: x has %d values, w %d, max |difference| %g, note = %q"):format(
    #loaded.x, #loaded.w, (loaded.w - w):abs():max(), meta.note))
