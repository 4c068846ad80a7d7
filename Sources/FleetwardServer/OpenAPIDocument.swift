/// The OpenAPI 3.1 description of the management API, served at `/api/v1/openapi.json`.
///
/// `Resources/openapi.json` is the source of truth, edited by hand and compiled into the binary;
/// tests check that it lists every route the router serves and that answers match its schemas.
enum OpenAPIDocument {
    static let bytes: [UInt8] = PackageResources.openapi_json
}
