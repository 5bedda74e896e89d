//! Chat: a list of role/content messages rendered with the model's chat template, then run
//! like a task (routed over a variant directory), stopping at the end of the assistant's turn.

use super::Route;
use super::{Engine, RunResult};
use crate::engine::{GenerateParams, TokenEvent};
use crate::model::tokenizer::{routing_text, ChatMessage};
use crate::{Error, Result};

impl Engine {
    /// `messages` rendered with the model's chat template, ending with the opening of the
    /// assistant's turn. An error when the tokenizer has no template.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        let tok = self.need_tokenizer()?;
        let template = tok.chat_template().ok_or_else(|| {
            Error::invalid(format!(
                "{} has no chat template (tokenizer.chat_template in GGUF, chat_template in \
                 tokenizer_config.json)",
                self.source
            ))
        })?;
        template.render(messages, true)
    }

    /// The token ids of [`Engine::chat_prompt`]. BOS is prepended only when the rendered text
    /// does not already start with it and the tokenizer adds one.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.encode_chat_with(messages, None)
    }

    /// [`Engine::encode_chat`] with the BOS choice of [`GenerateParams::add_bos`]: `None`
    /// as there, `Some(true)` makes the ids start with BOS (once, also when the template
    /// writes it), `Some(false)` adds none (a BOS the template writes stays: it is text).
    pub fn encode_chat_with(
        &self,
        messages: &[ChatMessage],
        add_bos: Option<bool>,
    ) -> Result<Vec<u32>> {
        let tok = self.need_tokenizer()?;
        let text = self.chat_prompt(messages)?;
        let bos_in_text = tok
            .chat_template()
            .is_some_and(|t| !t.bos_token().is_empty() && text.starts_with(t.bos_token()));
        let bos = self.config().bos_token.or(tok.bos_id());
        let mut ids = match add_bos {
            None => tok.encode(&text, !bos_in_text && bos.is_some())?,
            Some(_) => tok.encode(&text, false)?,
        };
        if add_bos == Some(true) && ids.first() != bos.as_ref() {
            ids.splice(0..0, bos);
        }
        if ids.is_empty() {
            return Err(Error::invalid("the chat renders to no tokens"));
        }
        Ok(ids)
    }

    /// Renders `messages` with the chat template and generates the assistant's reply,
    /// streaming each token to `on_token` (return `false` to stop). Generation stops at the
    /// model's end-of-sequence and end-of-turn tokens (GGUF `eos_token_id`, `eot_token_id`).
    /// Over a variant directory the conversation is routed on its last user message
    /// ([`Engine::chat_routing_ids`]) as [`Engine::run`] routes a task.
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        let ids = self.encode_chat_with(messages, params.add_bos)?;
        self.run_ids(&self.chat_routing_ids(messages)?, &ids, params, on_token)
    }

    /// The ids the router reads for `messages`: the last user message's text
    /// ([`routing_text`]) encoded as [`Engine::route`] encodes a task, so that a conversation
    /// routes as its task does whatever the system prompt; the whole rendered conversation
    /// when no user message has text.
    pub fn chat_routing_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        match routing_text(messages) {
            Some(task) => self.encode(task),
            None => self.encode_chat(messages),
        }
    }

    /// Decides which variant would serve the conversation `messages`, without running it,
    /// as [`Engine::route`] decides for a task (over [`Engine::chat_routing_ids`]).
    pub fn route_chat(&self, messages: &[ChatMessage]) -> Result<Route> {
        self.route_ids(&self.chat_routing_ids(messages)?, None)
    }
}
