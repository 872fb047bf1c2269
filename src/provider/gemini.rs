//! gemini: placeholder until its translation lands (this file is being written now).

use super::openai::{AnswerContext, ChatRequest};
use super::{FormatOptions, Provider, StreamTranslator, Unsupported};

pub const DEFAULT_BASE_PATH: &str = "/v1";

pub fn chat_path(provider: &Provider, _model: &str, _stream: bool) -> String {
    format!("{}/x", provider.base_path)
}

pub fn request(_request: &ChatRequest, _model: &str, _options: &FormatOptions) -> Result<Vec<u8>, Unsupported> {
    Err(Unsupported("not yet".into()))
}

pub fn answer(_body: &[u8], _context: &AnswerContext) -> Result<Vec<u8>, String> {
    Err("not yet".into())
}

pub fn error(_status: u16, body: &[u8]) -> Vec<u8> {
    body.to_vec()
}

pub struct Stream {
    _context: AnswerContext,
}

impl Stream {
    pub fn new(context: AnswerContext) -> Stream {
        Stream { _context: context }
    }
}

impl StreamTranslator for Stream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        chunk.to_vec()
    }
    fn finish(&mut self) -> Vec<u8> {
        Vec::new()
    }
}
