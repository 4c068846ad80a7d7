-- wrk script for bench/est.sh: each request enrolls the next allow-listed device (EB-1, EB-2, …)
-- over EST simpleenroll with HTTP Basic (device ID, factory secret) and the same base64 CSR
-- (empty subject: the identity comes from the proof). One wrk thread, so the counter is unique.
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local counter = tonumber(os.getenv("EST_FIRST") or "1") - 1
local csr = io.open(os.getenv("EST_CSR")):read("*a")
wrk.method = "POST"
wrk.body = csr
wrk.headers["Content-Type"] = "application/pkcs10"
local errors = 0

request = function()
  counter = counter + 1
  local id = "EB-" .. counter
  local secret = string.format("secret-%014d", counter)
  -- Headers given here replace wrk.headers, so the content type goes in again.
  return wrk.format(nil, nil, {
    ["Content-Type"] = "application/pkcs10",
    ["Authorization"] = "Basic " .. base64(id .. ":" .. secret),
  })
end

response = function(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    if errors <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
end
