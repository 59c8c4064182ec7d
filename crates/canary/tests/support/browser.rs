//! A browser as the gateway sees one: a cookie jar that keeps what responses set, and the fetch
//! metadata a browser sends for a page load (a session boundary) and for the page's own
//! requests (which must follow the session's pin).

use reqwest::{Client, Response};

/// One browser profile: its cookies and the version that served the page it shows.
#[derive(Debug, Default)]
pub struct Browser {
    cookies: Vec<(String, String)>,
    page_version: Option<String>,
}

impl Browser {
    /// A browser with no cookies and no page loaded.
    pub fn new() -> Browser {
        Browser::default()
    }

    /// Loads a page at `url` (a top-level navigation) and keeps the cookies it sets.
    pub async fn navigate(&mut self, client: &Client, url: &str) -> reqwest::Result<Response> {
        let request = client
            .get(url)
            .header("sec-fetch-dest", "document")
            .header("sec-fetch-mode", "navigate")
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        let response = self.send(request).await?;
        self.page_version = version_header(&response);
        Ok(response)
    }

    /// A request of the loaded page (a script, a `fetch()` to an API) at `url`.
    pub async fn fetch(&mut self, client: &Client, url: &str) -> reqwest::Result<Response> {
        let request =
            client.get(url).header("sec-fetch-dest", "empty").header("sec-fetch-mode", "cors").header("accept", "*/*");
        self.send(request).await
    }

    /// The version that served the page this browser shows.
    pub fn page_version(&self) -> Option<&str> {
        self.page_version.as_deref()
    }

    /// The value of cookie `name`, if the browser holds it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    async fn send(&mut self, mut request: reqwest::RequestBuilder) -> reqwest::Result<Response> {
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
            request = request.header("cookie", jar.join("; "));
        }
        let response = request.send().await?;
        for set in response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            self.remember(set);
        }
        Ok(response)
    }

    /// Stores one `Set-Cookie` (its name and value; `Max-Age=0` deletes it).
    fn remember(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else { return };
        self.cookies.retain(|(n, _)| n != name);
        let expired = parts.any(|attribute| attribute.eq_ignore_ascii_case("max-age=0"));
        if !expired {
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }
}

/// The version a response came from, by the gateway's `x-canary-version` header.
pub fn version_header(response: &Response) -> Option<String> {
    response.headers().get("x-canary-version").and_then(|v| v.to_str().ok()).map(str::to_owned)
}
