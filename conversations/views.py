from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def chat(request: HttpRequest) -> HttpResponse:
    return render(request, "conversations/chat.html")


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    return render(request, "conversations/usage.html")
