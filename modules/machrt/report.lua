-- machrt.report: a self-contained HTML index of a run's folder.
--
--   local report = require "machrt.report"
--   report.write_index("runs/resnet34/fold0", {
--       title = "resnet34 / fold 0",
--       facts = { { "best val F1", 0.962 }, { "epochs", 30 } },
--       tables = { { title = "per class", header = { "class", "F1" }, rows = { { "fan", 0.98 } } } },
--       images = { { title = "loss", file = "curves.png" } },   -- paths relative to the folder
--   })
--
-- Writes folder/index.html.tmp.<pid>.<n> (sys.write_file) and renames it to folder/index.html. All text
-- is HTML-escaped; the page has no external resources besides the images.

local sys = require "machrt.sys"

local M = {}

local function fail(fmt, ...)
    error(string.format(fmt, ...), 0)
end

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

function M.escape(s)
    return (tostring(s):gsub("[&<>\"']", ESC))
end
local esc = M.escape

-- Numbers: integers as they are, floats with 4 significant digits.
local function cell(v)
    if math.type(v) == "integer" then return tostring(v) end
    if math.type(v) == "float" then
        if v ~= v then return "nan" end
        if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%.0f", v) end
        return string.format("%.4g", v)
    end
    if v == nil then return "" end
    return tostring(v)
end

local CSS = [[
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.4em; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.25em 1.5em; margin: 0; }
dl.facts dt { color: #555; }
dl.facts dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; margin: 0.3em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 0 0 1.5em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; margin-top: 0.3em; }
footer { color: #888; font-size: 0.85em; margin-top: 2em; }
]]

local function check_list(key, v)
    if v ~= nil and type(v) ~= "table" then
        fail("report.write_index: opts.%s must be a list, got a %s", key, type(v))
    end
    return v or {}
end

-- report.write_index(folder, opts) -> path of the page written
-- opts: title, facts = list of {label, value}, tables = list of {title=,
-- header = {...}, rows = {{...}, ...}}, images = list of {title=, file=}.
function M.write_index(folder, opts)
    if type(folder) ~= "string" or folder == "" then
        fail("report.write_index: folder must be a non-empty string, got %s", type(folder))
    end
    if opts ~= nil and type(opts) ~= "table" then
        fail("report.write_index: opts must be a table, got a %s", type(opts))
    end
    opts = opts or {}
    local title = opts.title and tostring(opts.title) or folder
    local out = {
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<title>", esc(title), "</title>\n<style>\n", CSS, "</style>\n</head>\n<body>\n",
        "<h1>", esc(title), "</h1>\n",
    }
    local function add(...)
        for _, s in ipairs { ... } do out[#out + 1] = s end
    end

    local facts = check_list("facts", opts.facts)
    if #facts > 0 then
        add("<dl class=\"facts\">\n")
        for i, f in ipairs(facts) do
            if type(f) ~= "table" or f[1] == nil then
                fail("report.write_index: facts[%d] must be {label, value}", i)
            end
            add("<dt>", esc(f[1]), "</dt><dd>", esc(cell(f[2])), "</dd>\n")
        end
        add("</dl>\n")
    end

    for i, t in ipairs(check_list("tables", opts.tables)) do
        if type(t) ~= "table" or (t.rows ~= nil and type(t.rows) ~= "table")
            or (t.header ~= nil and type(t.header) ~= "table") then
            fail("report.write_index: tables[%d] must be {title=, header={...}, rows={{...}}}", i)
        end
        if t.title then add("<h2>", esc(t.title), "</h2>\n") end
        add("<table>\n")
        if t.header and #t.header > 0 then
            add("<thead><tr>")
            for _, h in ipairs(t.header) do add("<th>", esc(cell(h)), "</th>") end
            add("</tr></thead>\n")
        end
        add("<tbody>\n")
        for r, row in ipairs(t.rows or {}) do
            if type(row) ~= "table" then
                fail("report.write_index: tables[%d].rows[%d] must be a list of cells", i, r)
            end
            add("<tr>")
            local n = math.max(#row, t.header and #t.header or 0)
            for k = 1, n do
                local v = row[k]
                add(type(v) == "number" and "<td class=\"num\">" or "<td>", esc(cell(v)), "</td>")
            end
            add("</tr>\n")
        end
        add("</tbody>\n</table>\n")
    end

    local images = check_list("images", opts.images)
    if #images > 0 then add("<h2>Pictures</h2>\n") end
    for i, im in ipairs(images) do
        if type(im) ~= "table" or type(im.file) ~= "string" or im.file == "" then
            fail("report.write_index: images[%d] must be {title=, file=\"relative/path.png\"}", i)
        end
        local cap = im.title and tostring(im.title) or im.file
        add("<figure><img src=\"", esc(im.file), "\" alt=\"", esc(cap), "\">",
            "<figcaption>", esc(cap), "</figcaption></figure>\n")
    end

    add("<footer>written ", esc(os.date("!%Y-%m-%d %H:%M UTC")), " by machrt</footer>\n</body>\n</html>\n")

    local path = folder .. "/index.html"
    local ok, err = pcall(sys.write_file, path, table.concat(out))
    if not ok then fail("report.write_index: %s", tostring(err)) end
    return path
end

return M
