-- wrk script for bench/est.sh: cfssl's /api/v1/cfssl/sign with the same kind of CSR.
wrk.method = "POST"
wrk.body = io.open(os.getenv("CFSSL_BODY")):read("*a")
wrk.headers["Content-Type"] = "application/json"
response = function(status, headers, body)
  if status ~= 200 then io.stderr:write("status " .. status .. "\n") end
end
