//! Chat templates: the Jinja template a model ships (`tokenizer.chat_template` in GGUF,
//! `chat_template` in Hugging Face's `tokenizer_config.json`) rendered with minijinja over a
//! list of role/content messages, as llama.cpp and Hugging Face's `apply_chat_template` do.

use crate::{Error, Result};
use serde::Serialize;

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may know others, such as `tool`).
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A message with role `role` and text `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The text a router reads to judge a conversation: the content of its last `user` message
/// (the task being asked now), or `None` when no user message has text. The rendered
/// conversation begins with the template's markup and the system prompt, which an agent keeps
/// the same for every task, and the controller reads only a conversation's first tokens: fed
/// the rendered text, it would read the same system prompt for every task.
pub fn routing_text(messages: &[ChatMessage]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .filter(|c| !c.trim().is_empty())
}

/// A model's chat template with the BOS and EOS token texts it may refer to.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

/// Templates call this to reject a conversation they cannot render.
fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        msg,
    ))
}

impl ChatTemplate {
    /// A template from its Jinja source and the texts of the BOS and EOS tokens.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Self {
        ChatTemplate {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        }
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text of the BOS token (empty when the model has none).
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the opening of an
    /// assistant turn, ready for the model to continue. Errors (a template that does not
    /// parse, or that raises on these messages) are [`Error::InvalidArgument`] with the
    /// template's message.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::invalid("a chat needs at least one message"));
        }
        let mut env = minijinja::Environment::new();
        // Hugging Face renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template("chat", &self.source)
            .map_err(|e| Error::invalid(format!("chat template does not parse: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::Internal(format!("chat template: {e}")))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::invalid(format!("chat template: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are helpful<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn chatml_adds_the_default_system_turn_and_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>");
        let s = t.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let s = t
            .render(
                &[
                    ChatMessage::new("system", "Be brief"),
                    ChatMessage::new("user", "Hi"),
                ],
                false,
            )
            .unwrap();
        assert!(
            s.starts_with("<|im_start|>system\nBe brief<|im_end|>"),
            "{s}"
        );
        assert!(!s.ends_with("assistant\n"));
    }

    #[test]
    fn routing_text_is_the_last_user_message_with_text() {
        let m = |r: &str, c: &str| ChatMessage::new(r, c);
        let conv = [
            m("system", "You are an agent with many tools."),
            m("user", "First task"),
            m("assistant", "Done."),
            m("user", "Second task"),
            m("assistant", "partial"),
        ];
        assert_eq!(routing_text(&conv), Some("Second task"));
        assert_eq!(routing_text(&conv[..3]), Some("First task"));
        assert_eq!(routing_text(&conv[..1]), None);
        assert_eq!(routing_text(&[m("user", "  \n")]), None);
        assert_eq!(routing_text(&[]), None);
    }

    #[test]
    fn bos_python_methods_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}[{{ m.content.strip() }}]{% endfor %}",
            "<s>",
            "</s>",
        );
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  x ")], true).unwrap(),
            "<s>[x]"
        );
        let e = t
            .render(&[ChatMessage::new("tool", "x")], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad role tool"), "{e}");
        assert!(ChatTemplate::new("{% for %}", "", "")
            .render(&[ChatMessage::new("user", "x")], true)
            .is_err());
        assert!(t.render(&[], true).is_err());
    }
}
