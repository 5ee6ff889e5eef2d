"""Enrich events with the location of their IP (a MaxMind City record, via meta.geoip)."""

from pipeline.plugins.geoip import GeoIP

DEFAULT_LANGUAGE = "en"


def setup_plugin(meta):
    uploaded = meta.attachments.get("database")
    meta.state["geoip"] = GeoIP.from_bytes(uploaded["contents"]) if uploaded else meta.geoip
    if not meta.state["geoip"].available:
        meta.logger.warning("no GeoIP database: upload one, or set GEOIP_DATABASE_PATH to a MaxMind City .mmdb file")


def _name(record, key):
    names = (record.get(key) or {}).get("names") or {}
    return names.get(DEFAULT_LANGUAGE)


def location_properties(record):
    properties = {
        "$geoip_city_name": _name(record, "city"),
        "$geoip_country_name": _name(record, "country"),
        "$geoip_country_code": (record.get("country") or {}).get("iso_code"),
        "$geoip_continent_name": _name(record, "continent"),
        "$geoip_continent_code": (record.get("continent") or {}).get("code"),
        "$geoip_postal_code": (record.get("postal") or {}).get("code"),
        "$geoip_latitude": (record.get("location") or {}).get("latitude"),
        "$geoip_longitude": (record.get("location") or {}).get("longitude"),
        "$geoip_time_zone": (record.get("location") or {}).get("time_zone"),
    }
    for index, subdivision in enumerate(record.get("subdivisions") or [], start=1):
        properties[f"$geoip_subdivision_{index}_code"] = subdivision.get("iso_code")
        properties[f"$geoip_subdivision_{index}_name"] = (subdivision.get("names") or {}).get(DEFAULT_LANGUAGE)
    return {key: value for key, value in properties.items() if value is not None}


def process_event(event, meta):
    properties = event.setdefault("properties", {})
    if properties.get("$geoip_disable"):
        return event
    ip = properties.get("$ip") or event.get("ip")
    record = meta.state["geoip"].locate(ip) if ip else None
    if not record:
        return event
    found = location_properties(record)
    properties.update(found)
    event["$set"] = {**(event.get("$set") or {}), **found}
    initial = {key.replace("$geoip_", "$initial_geoip_", 1): value for key, value in found.items()}
    event["$set_once"] = {**initial, **(event.get("$set_once") or {})}
    return event
